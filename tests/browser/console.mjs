// The console in a real browser (Debian's chromium through playwright-core) against a real
// `tollgate serve`, driven by actors/tests/console_browser.rs. This script asks the Rust test to
// act on the server by printing `@@ <command>` and reading the answer (one line on stdin):
// `start approval|budget|guidance|notify|tool|prompt` → a run id (started by alice), `restart` → `ok` once the
// server is back, `refunds` → how many calls the tool's service received. The server's catalogue
// holds the shipped templates and `console-tally`. $TOLLGATE_TOKEN is alice's token (group ops, which owns the workflows),
// $TOLLGATE_OTHER_TOKEN bob's (another group), $TOLLGATE_ADMIN_TOKEN the bootstrap token.
// Screenshots go to $SCREENSHOT_DIR. Exits non-zero on the first failed expectation.

import { chromium } from "playwright-core";
import readline from "node:readline";
import path from "node:path";
import { readFile } from "node:fs/promises";

const base = process.env.TOLLGATE_URL;
const token = process.env.TOLLGATE_TOKEN;
const otherToken = process.env.TOLLGATE_OTHER_TOKEN;
const adminToken = process.env.TOLLGATE_ADMIN_TOKEN;
const shots = process.env.SCREENSHOT_DIR;
const WAIT = { timeout: 60_000 };

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function ask(command) {
  console.log(`@@ ${command}`);
  const { value, done } = await lines.next();
  if (done) throw new Error(`no answer to ${command}`);
  if (value.startsWith("error")) throw new Error(`${command}: ${value}`);
  return value.trim();
}

function expect(cond, what) {
  if (!cond) throw new Error(`expected: ${what}`);
  console.log(`ok - ${what}`);
}

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu"] });
const pageErrors = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") console.log(`browser console: ${m.text()}`); });

  // Sign in: a wrong token and the bootstrap admin token are refused; a user's token gives an
  // HttpOnly, SameSite=Strict cookie.
  await page.goto(`${base}/console/`);
  await page.getByLabel("API token").fill("not-the-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#sign-in-error", { hasText: "not valid" }).waitFor(WAIT);
  expect(true, "a wrong token is refused");
  await page.getByLabel("API token").fill(adminToken);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#sign-in-error", { hasText: "only creates users" }).waitFor(WAIT);
  expect(true, "the admin token does not sign in (it only creates users)");
  await page.getByLabel("API token").fill(token);
  await page.getByLabel("API token").press("Enter");
  await page.locator('#live[data-state="live"]').waitFor(WAIT);
  await page.locator("#inbox-empty").waitFor(WAIT);
  const cookie = (await context.cookies()).find((c) => c.name === "tollgate_session");
  expect(cookie && cookie.httpOnly && cookie.sameSite === "Strict", "the session cookie is HttpOnly and SameSite=Strict");
  const noCsrf = await page.evaluate(async () => (await fetch("/api/requests/x/decision", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ decision: "approve" }) })).status);
  expect(noCsrf === 403, `a state change without the CSRF token is refused (${noCsrf})`);

  // A card arrives live: no reload, no polling.
  await page.evaluate(() => { window.sameDocument = true; });
  const run1 = await ask("start approval");
  const card1 = page.locator(`#inbox .card[data-run="${run1}"][data-mode="approval"]`);
  await card1.waitFor(WAIT);
  expect(await page.evaluate(() => window.sameDocument === true), "the approval card arrived live, without a reload");
  await page.screenshot({ path: path.join(shots, "inbox.png"), fullPage: true });

  // A `notify` step's notification appears live above the inbox, and is announced.
  const told = await ask("start notify");
  await page.locator(`#notifications li[data-run="${told}"]`, { hasText: "Invoices ready" }).waitFor(WAIT);
  expect((await page.locator("#toast").textContent()).includes("Notification: Invoices ready"), "the new notification was announced");
  expect(await page.evaluate(() => window.sameDocument === true), "the notification arrived live, without a reload");

  // The server restarts: the stream reconnects, the inbox is fetched again, the card is still there.
  await page.evaluate(() => {
    window.liveStates = [];
    new MutationObserver(() => window.liveStates.push(document.getElementById("live").dataset.state))
      .observe(document.getElementById("live"), { attributes: true, attributeFilter: ["data-state"] });
  });
  const fetchesBefore = Number(await page.locator("body").getAttribute("data-inbox-fetches"));
  await ask("restart");
  await page.waitForFunction((n) => Number(document.body.dataset.inboxFetches) > n && document.getElementById("live").dataset.state === "live", fetchesBefore, WAIT);
  const states = await page.evaluate(() => window.liveStates);
  expect(states.includes("reconnecting") && states.at(-1) === "live", `the console saw the connection drop and come back (${states.join(" → ")})`);
  await card1.waitFor(WAIT);
  expect(await page.evaluate(() => window.sameDocument === true), "after the restart the card is still there, re-fetched without a reload");

  // Approve through the card's form; the timeline shows the run finish, the decision and who.
  const request1 = await card1.getAttribute("data-request");
  await card1.locator(".card-link").click();
  await page.locator('#card[data-mode="approval"]').waitFor(WAIT);
  await page.screenshot({ path: path.join(shots, "card-approval.png"), fullPage: true });
  await page.getByLabel(/Comment/).fill("conflicts clear");
  await page.locator('button[data-decision="approve"]').click();
  await page.locator(`#timeline[data-run="${run1}"][data-status="succeeded"]`).waitFor(WAIT);
  const decision = page.locator('.step[data-step="approve_letter"] .decision');
  expect((await decision.getAttribute("data-by")) === "alice", "the decision is recorded under the signed-in user");
  const decisionText = await decision.innerText();
  expect(/approve by alice/.test(decisionText) && decisionText.includes("conflicts clear"), `the timeline shows the decision and who (${decisionText})`);
  expect(await page.locator('.step[data-step="send"][data-status="succeeded"]').count() === 1, "the step after the approval ran");
  expect(await page.locator('#dag .node[data-step="approve_letter"]').count() === 1 && await page.locator("#dag .edge").count() === 2, "the DAG is drawn with its edges");
  await page.screenshot({ path: path.join(shots, "timeline.png"), fullPage: true });

  // The run view offers its signed receipt as a download, with the decision and who made it.
  const [download] = await Promise.all([page.waitForEvent("download", WAIT), page.locator("#receipt-download").click()]);
  expect(download.suggestedFilename() === `receipt-${run1}.json`, `the receipt downloads as a file (${download.suggestedFilename()})`);
  const receipt = JSON.parse(await readFile(await download.path(), "utf8"));
  expect(receipt.format === "tollgate.receipt/v1" && receipt.header.run === run1 && /^[0-9a-f]{128}$/.test(receipt.signature), "the download is the run's signed receipt");
  expect(receipt.entries.some((e) => e.record.kind === "request.approved" && e.record.by === "alice"), "the receipt records alice's approval");
  await page.goto(`${base}/console/#/requests/${request1}`);
  const decidedCard = page.locator('#card[data-decided="approve"] .decision');
  await decidedCard.waitFor(WAIT);
  expect((await decidedCard.innerText()).includes("approve by alice"), "the card, opened again, shows the decision instead of the form");

  // Budget extension, by keyboard: open the card, type the amount, press the button.
  const run2 = await ask("start budget");
  const card2 = page.locator(`.card[data-run="${run2}"][data-mode="budget_extension"] .card-link`);
  await page.goto(`${base}/console/#/inbox`);
  await card2.waitFor(WAIT);
  await card2.focus();
  await page.keyboard.press("Enter");
  await page.locator('#card[data-mode="budget_extension"]').waitFor(WAIT);
  const fact = async (f) => (await page.locator(`#budget-facts [data-fact="${f}"]`).innerText()).trim();
  expect((await fact("needed")) === "0.40 USD" && (await fact("spent")) === "0.70 USD" && (await fact("estimate")) === "0.70 USD", "the card shows the amount asked, spent so far and the step's cost");
  await page.screenshot({ path: path.join(shots, "card-budget.png"), fullPage: true });
  await page.locator("#amount").fill("");
  await page.locator("#amount").pressSequentially("0.5");
  await page.locator('button[data-decision="extend"]').focus();
  await page.keyboard.press("Enter");
  await page.locator(`#timeline[data-run="${run2}"][data-status="succeeded"]`).waitFor(WAIT);
  const budgetText = await page.locator("#budget").innerText();
  expect(budgetText.includes("1.40 USD spent of 1.50 USD") && budgetText.includes("0.50 USD extended"), `the timeline shows the budget spent against the extended cap (${budgetText})`);

  // Guidance: the gate trail marks the redacted span; the output is released as is.
  const run3 = await ask("start guidance");
  await page.goto(`${base}/console/#/inbox`);
  const card3 = page.locator(`.card[data-run="${run3}"][data-mode="guidance"] .card-link`);
  await card3.waitFor(WAIT);
  await card3.click();
  const mark = page.locator('#evidence .finding[data-rule="codename"] mark');
  await mark.waitFor(WAIT);
  expect((await mark.innerText()) === "[CODENAME_1]", "the gate evidence marks the blocked span on the redacted text");
  const evidence = await page.locator("#evidence").innerText();
  expect(evidence.includes("/memo") && /ruleset \S+/.test(evidence), "the evidence names the JSON path and the ruleset version");
  expect(!(await page.content()).includes("PROJECT-LYNX"), "the blocked value itself is nowhere on the page");
  await page.screenshot({ path: path.join(shots, "card-guidance.png"), fullPage: true });
  await page.locator('button[data-decision="approve"]').click();
  await page.locator(`#timeline[data-run="${run3}"][data-status="succeeded"]`).waitFor(WAIT);
  const trailMark = page.locator('.step[data-step="fetch"] .finding[data-rule="codename"] mark');
  expect((await trailMark.innerText()) === "[CODENAME_1]", "the step's gate trail on the timeline marks the redacted span");
  expect(!(await page.content()).includes("PROJECT-LYNX"), "the released output is shown redacted on the timeline");
  await page.screenshot({ path: path.join(shots, "timeline-guidance.png"), fullPage: true });

  // Tool authorisation: the tool, its arguments (redacted) and the model's reason; the first
  // call is allowed once, the second denied with a reason the model receives.
  const run4 = await ask("start tool");
  await page.goto(`${base}/console/#/inbox`);
  const card4 = page.locator(`.card[data-run="${run4}"][data-mode="tool_authorisation"] .card-link`);
  await card4.waitFor(WAIT);
  await card4.click();
  await page.locator('#card[data-mode="tool_authorisation"]').waitFor(WAIT);
  const toolFact = async (f) => (await page.locator(`#tool-facts [data-fact="${f}"]`).innerText()).trim();
  expect((await toolFact("tool")) === "refund" && (await toolFact("description")) === "Refund an order to the customer's card", "the card names the tool and what it does");
  expect((await toolFact("reason")).includes("refund of order 7"), "the card shows the model's stated reason");
  const args = await page.locator("#tool-arguments").innerText();
  expect(args.includes('"order": 7') && /\[EMAIL_\d+\]/.test(args), `the arguments are shown, redacted (${args.replace(/\s+/g, " ")})`);
  expect(!(await page.content()).includes("jane.doe@acme-corp.com"), "the customer's address is nowhere on the page");
  await page.screenshot({ path: path.join(shots, "card-tool.png"), fullPage: true });
  expect((await ask("refunds")) === "0", "nothing was refunded before the decision");
  await page.locator('button[data-decision="allow_once"]').click();
  await page.locator(`#timeline[data-run="${run4}"]`).waitFor(WAIT);
  // The second call asks again (allowed once covers one call): deny it, with a reason.
  await page.goto(`${base}/console/#/inbox`);
  const card5 = page.locator(`.card[data-run="${run4}"][data-mode="tool_authorisation"] .card-link`);
  await card5.waitFor(WAIT);
  await card5.click();
  await page.locator('#card[data-mode="tool_authorisation"]').waitFor(WAIT);
  expect((await toolFact("reason")).includes("refund of order 8"), "the second call asks again");
  await page.locator('button[data-decision="deny"]').click();
  await page.locator("#decision-error", { hasText: "Say why" }).waitFor(WAIT);
  expect(true, "a denial needs a reason");
  await page.getByLabel(/Reason for denying/).fill("order 8 was already refunded by phone");
  await page.locator('button[data-decision="deny"]').click();
  await page.locator(`#timeline[data-run="${run4}"][data-status="succeeded"]`).waitFor(WAIT);
  const toolOutput = await page.locator('.step[data-step="handle"] .output').textContent();
  expect(toolOutput.includes("denied by alice: order 8 was already refunded by phone"), "the model received the denial's reason (its answer quotes it)");
  const calls = await page.locator('.step[data-step="handle"] .tool-calls li').evaluateAll((li) => li.map((l) => `${l.dataset.tool}:${l.dataset.status}`));
  expect(calls.join(",") === "refund:ok,refund:denied", `the timeline lists the tool calls and how they ended (${calls.join(", ")})`);
  expect((await page.locator('.step[data-step="handle"] .decision').getAttribute("data-by")) === "alice", "the timeline shows who decided");
  expect((await ask("refunds")) === "1", "only the allowed call was made");
  await page.screenshot({ path: path.join(shots, "timeline-tool.png"), fullPage: true });

  // Guidance on a prompt the injection classifier flagged: the signals and the flagged text;
  // sent to the model as is.
  const run5 = await ask("start prompt");
  await page.goto(`${base}/console/#/inbox`);
  const card6 = page.locator(`.card[data-run="${run5}"][data-mode="guidance"] .card-link`);
  await card6.waitFor(WAIT);
  await card6.click();
  await page.locator("#prompt-facts").waitFor(WAIT);
  expect((await page.locator('#prompt-facts [data-fact="signals"]').innerText()).includes("threat.instruction_override"), "the card names the classifier's signals");
  expect((await page.locator("#prompt-flagged").innerText()).toLowerCase().includes("ignore all previous instructions"), "the card shows the flagged text");
  await page.screenshot({ path: path.join(shots, "card-prompt.png"), fullPage: true });
  await page.locator('button[data-decision="approve"]').click();
  await page.locator(`#timeline[data-run="${run5}"][data-status="succeeded"]`).waitFor(WAIT);
  const promptOut = await page.locator('.step[data-step="summarise"] .output').textContent();
  expect(promptOut.includes("An invoice from Acme for March.") && promptOut.includes("released by a human"), "released: the model was called and the finding is on the output");

  // Runs list with filters.
  await page.goto(`${base}/console/#/runs`);
  await page.locator(`#runs tr[data-run="${run1}"]`).waitFor(WAIT);
  await page.getByLabel("Workflow").fill("console-budget");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.locator(`#runs[data-filters="workflow=console-budget"] tr[data-run="${run2}"]`).waitFor(WAIT);
  expect(await page.locator("#runs tbody tr[data-run]").count() === 1, "the workflow filter keeps only that workflow's run");
  await page.getByLabel("Status").selectOption("failed");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.locator('#runs[data-filters="workflow=console-budget&status=failed"] td.empty').waitFor(WAIT);
  expect(true, "no failed run of that workflow");

  // Start a run from the catalogue's form: every template is listed; the form has one typed,
  // described field per parameter with its default; a bad value is refused with its name; the
  // run starts with the values typed and the timeline shows it finish.
  await page.getByRole("link", { name: "Start a run" }).click();
  await page.locator('#templates li[data-template="console-tally"]').waitFor(WAIT);
  const listed = await page.locator("#templates li[data-template]").evaluateAll((els) => els.map((e) => e.dataset.template));
  expect(listed.includes("client-intake") && listed.includes("console-tally"), `the shipped and the configured templates are listed (${listed.join(", ")})`);
  await page.locator('#templates li[data-template="console-tally"] a').click();
  await page.locator("#start-run").waitFor(WAIT);
  expect(await page.getByLabel(/threshold/).inputValue() === "100", "an optional parameter's field holds its default");
  expect((await page.locator("#param-client-help").innerText()).includes("The client's name"), "a parameter's description is shown with its field");
  expect(await page.locator("#param-client").getAttribute("required") !== null, "a required parameter's field is required");
  await page.screenshot({ path: path.join(shots, "start-run-form.png"), fullPage: true });
  await page.getByLabel(/client/).fill("Acme Ltd");
  await page.getByLabel(/threshold/).fill("200");
  await page.getByLabel(/amounts/).fill("[150, 250,");
  await page.getByLabel(/urgent/).check();
  await page.getByRole("button", { name: "Start run" }).click();
  await page.locator("#start-error", { hasText: "amounts: not valid JSON" }).waitFor(WAIT);
  expect(true, "a malformed list is refused, naming the parameter");
  await page.getByLabel(/amounts/).fill("[150, 250, 900]");
  await page.getByRole("button", { name: "Start run" }).click();
  await page.locator('#timeline[data-status="succeeded"]').waitFor(WAIT);
  const formRun = await page.locator("#timeline").getAttribute("data-run");
  const counted = await page.evaluate(async (run) => (await (await fetch(`/api/runs/${run}`)).json()), formRun);
  const countStep = await page.locator('.step[data-step="count"] .output pre').textContent();
  expect(countStep.includes('"client": "Acme Ltd"') && countStep.includes('"over": 2') && countStep.includes('"urgent": true'), `the run got the typed values (${countStep.replace(/\s+/g, " ")})`);
  expect(counted.workflow === "console-tally" && counted.status === "succeeded", `the API shows the run of the template (${counted.workflow}: ${counted.status})`);
  await page.screenshot({ path: path.join(shots, "start-run-timeline.png"), fullPage: true });

  // Phone width: the timeline stays within the screen (the DAG scrolls inside its frame).
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/console/#/runs/${run1}`);
  await page.locator(`#timeline[data-run="${run1}"]`).waitFor(WAIT);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow <= 0, `the timeline fits a phone-width screen (overflow ${overflow}px)`);
  await page.screenshot({ path: path.join(shots, "timeline-phone.png"), fullPage: true });
  await page.goto(`${base}/console/#/inbox`);
  await page.locator("#inbox-empty").waitFor(WAIT);
  await page.screenshot({ path: path.join(shots, "inbox-phone-empty.png") });

  // Another user (bob, not in the owning group) sees none of it: not in his inbox, not in his
  // runs, and the run itself is 404 to him, in the console and in the API.
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.locator("#sign-out").click();
  await page.getByLabel("API token").fill(otherToken);
  await page.getByLabel("API token").press("Enter");
  await page.locator("#who-name", { hasText: "bob" }).waitFor(WAIT);
  await page.locator("#inbox-empty").waitFor(WAIT);
  await page.goto(`${base}/console/#/runs`);
  await page.locator("#runs td.empty").waitFor(WAIT);
  expect(await page.locator("#runs tr[data-run]").count() === 0, "bob's runs list holds none of alice's runs");
  await page.goto(`${base}/console/#/runs/${run1}`);
  await page.locator("main .error", { hasText: "No such run" }).waitFor(WAIT);
  const statuses = await page.evaluate(async (run) => Promise.all([`/api/runs/${run}`, `/api/runs/${run}/timeline`].map(async (p) => (await fetch(p)).status)), run1);
  expect(statuses.every((s) => s === 404), `the API answers 404 for alice's run to bob (${statuses.join(", ")})`);
  await page.screenshot({ path: path.join(shots, "other-user-404.png") });

  expect(pageErrors.length === 0, `no script errors on the page (${pageErrors.join("; ")})`);
  console.log("@@ done");
} finally {
  await browser.close();
}
process.exit(0);
