#!/usr/bin/env python3
"""A small local stand-in for a language model, for the demo on a machine with no model
provider: it speaks the OpenAI Chat Completions protocol (POST /v1/chat/completions) and
answers with DETERMINISTIC drafts built from the prompt's own lines — it is not a model.

An engagement-letter request (a prompt with `Client:`, `Matter:` and `Matter value:` lines)
gets a letter with the firm's standard clauses and a fixed fee: the percentage of the first
similar past engagement in the prompt that names one between 5 and 12 % (that engagement is
the letter's `precedent`), else 8 % of the matter value — as JSON when the request asks for a
JSON object. The shipped templates' prompts name their task on a `Task:` line and get answers
built from the prompt: `precedent-summary` (each search result's fee sentence, citing its id),
`kyc-classify` (the document's kind by its words, holder, expiry date, and a confidence of
0.95, or 0.4 for a document it cannot place), `compliance-assessment` (a finding for each
sentence that says "unlimited" or "indefinitely"), `classify-document` (by the words in the
document), `refresh-report` (the report restated), `weekly-summary` (the counts it was given).
Anything else gets a short acknowledgement.
Token usage is counted as words. Usage: demo-llm.py [PORT]"""
import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "tollgate-demo-drafter"


def field(text, name):
    m = re.search(r"^\s*%s:\s*(.+)$" % re.escape(name), text, re.MULTILINE | re.IGNORECASE)
    return m.group(1).strip() if m else None


def precedent(prompt):
    """The first past engagement listed in the prompt (`[hit-N] SOURCE: TEXT`) whose fee is a
    percentage between 5 and 12: (source, percentage), or None."""
    for m in re.finditer(r"^\[hit-\d+\]\s+(\S+?):\s*(.*)$", prompt, re.MULTILINE):
        rest = prompt[m.start():].split("\n[hit-", 1)[0]
        pct = re.search(r"(\d+(?:\.\d+)?)\s*%", rest)
        if pct and 5 <= float(pct.group(1)) <= 12:
            return m.group(1), float(pct.group(1))
    return None


def draft(prompt):
    client, matter, value = field(prompt, "Client"), field(prompt, "Matter"), field(prompt, "Matter value")
    if not (client and matter and value):
        return None
    followed = precedent(prompt)
    rate = followed[1] if followed else 8.0
    try:
        fee = round(float(value) * rate / 100, 2)
    except ValueError:
        return None
    fee = int(fee) if fee == int(fee) else fee
    basis = "on the basis we agreed for comparable work" if followed else "invoiced on completion"
    body = (
        f"Dear {client},\n\n"
        f"Scope of engagement. We will act for you in the matter \"{matter}\".\n"
        f"Fees. Our fixed fee for this matter is {fee:.2f} USD, {basis}.\n"
        "Limitation of liability. Our aggregate liability is limited to the fee paid.\n"
        "Termination. Either party may end this engagement by written notice.\n\n"
        "Yours sincerely,\nThe Partners"
    )
    return {"address_block": f"{client}\nRegistered office on file", "fee": fee,
            "precedent": followed[0] if followed else None, "body": body}


def search_results(prompt):
    """The search results a research summary is sent: [(id, source, text)]."""
    block = prompt.split("Each starts with its id in square brackets:", 1)[-1].split("\nAnswer with the summary only.", 1)[0]
    out = []
    for part in re.split(r"^(?=\[hit-\d+\] )", block, flags=re.MULTILINE):
        m = re.match(r"\[(hit-\d+)\] (.+)\n([\s\S]*)", part.strip())
        if m:
            out.append((m.group(1), m.group(2).strip(), m.group(3).strip()))
    return out


KYC_KINDS = [("passport", "passport"), ("national identity card", "national_id"), ("driving licence", "driving_licence"),
             ("electricity bill", "utility_bill"), ("gas bill", "utility_bill"), ("water bill", "utility_bill"),
             ("bank statement", "bank_statement"), ("certificate of incorporation", "company_registration")]


def kyc(prompt):
    text = prompt.split("Document:", 1)[-1]
    low = text.lower()
    kind = next((k for words, k in KYC_KINDS if words in low), "other")
    expiry = re.search(r"expir\w*[^\n\d]*(\d{4}-\d{2}-\d{2})", text, re.IGNORECASE)
    holder = None
    for key in ("Account holder", "Holder", "Company", "Name"):
        holder = field(text, key)
        if holder:
            break
    if not holder:
        surname, given = field(text, "Surname"), field(text, "Given names")
        holder = " ".join(x for x in (given, surname) if x) or "unknown"
    return {"kind": kind, "holder": holder, "expires": expiry.group(1) if expiry else None,
            "confidence": 0.95 if kind != "other" else 0.4}


def sentences(text):
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def task_answer(prompt):
    """The answer to a shipped template's task, or None."""
    task = field(prompt, "Task")
    if task == "precedent-summary":
        lines = []
        for hid, source, text in search_results(prompt):
            parts = [x for line in text.splitlines() for x in sentences(line)]
            sentence = next((x for x in parts if "fee" in x.lower()), parts[0] if parts else source)
            lines.append(f"{source}: {sentence} [{hid}]")
        return {"text": " ".join(lines) or "No past engagement bears on this matter."}
    if task == "kyc-classify":
        return kyc(prompt)
    if task == "compliance-assessment":
        body = prompt.split("Document text:", 1)[-1]
        findings = []
        for s in sentences(body):
            low = s.lower()
            if "unlimited" in low or "indefinitely" in low:
                findings.append({"rule": "Liability and retention limits", "severity": "high" if "unlimited" in low else "medium",
                                 "quote": s, "explanation": "The firm's policies require a cap and a retention limit."})
        return {"findings": findings, "summary": f"{len(findings)} finding(s) against the policies found."}
    if task == "classify-document":
        # The document: what follows its `Document N: name` line (not the list of categories).
        text = re.split(r"^Document \d+:.*$", prompt, maxsplit=1, flags=re.MULTILINE)[-1].lower()
        category = ("invoice" if "invoice" in text or "amount due" in text else
                    "contract" if "agreement" in text or "lease" in text else
                    "court filing" if "court" in text or "claimant" in text else "correspondence")
        m = re.search(r"^Document \d+:\s*(.+)$", prompt, re.MULTILINE)
        name = m.group(1).strip() if m else "the document"
        return {"category": category, "summary": f"{name} reads as {category}."}
    if task == "refresh-report":
        title = field(prompt, "Title") or "Report"
        old = prompt.split("Report:", 1)[-1].strip()
        return {"title": title, "body": f"{title}. Restated for the current quarter: {old} The figures and the outlook were brought up to date.",
                "changes": "Restated the report with current figures."}
    if task == "weekly-summary":
        runs = field(prompt, "Runs") or "0"
        failed = [l[2:] for l in prompt.split("Failed runs:", 1)[-1].split("Notes", 1)[0].splitlines() if l.startswith("- ") and l != "- none"]
        return {"text": f"This week: {runs} runs. " + (f"{len(failed)} failed and need attention: " + "; ".join(failed) if failed else "Nothing failed.")}
    return None


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self.reply(404, {"error": {"message": "only /v1/chat/completions is served here"}})
        length = int(self.headers.get("content-length") or 0)
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self.reply(400, {"error": {"message": "body is not JSON"}})
        messages = request.get("messages") or []
        prompt = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")
        letter = draft(prompt)
        wants_json = (request.get("response_format") or {}).get("type") == "json_object"
        answer = task_answer(prompt)
        if answer is not None:
            text = answer["text"] if set(answer) == {"text"} else json.dumps(answer)
        elif letter is None:
            text = "Noted. (Local demo stand-in: no model is configured, so no real answer is written.)"
            if wants_json:
                text = json.dumps({"note": text})
        else:
            text = json.dumps(letter) if wants_json else letter["body"]
        words_in = sum(len(str(m.get("content") or "").split()) for m in messages)
        self.reply(200, {
            "id": "chatcmpl-demo", "object": "chat.completion", "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": words_in, "completion_tokens": len(text.split()), "total_tokens": words_in + len(text.split())},
        })

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8482
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
