"""The SMTP sink of Tollgate's tests: Debian's python3-aiosmtpd delivering into a maildir.

Run by tests/src/smtp_sink.rs as `python3 -c <this file> --port … --maildir … --log …`.

- `--security none|starttls|tls`: plaintext; STARTTLS offered (with `--cert`/`--key`); or TLS
  from the first byte (SMTPS).
- `--user U` (password in the environment variable SINK_PASSWORD): AUTH PLAIN/LOGIN checked
  against them, and required before MAIL.

The sink is permissive on purpose — it offers AUTH on a plaintext session and accepts mail
without STARTTLS — so that what the client does is visible: every AUTH attempt and every
delivered message is logged to `--log` (one JSON object a line) with whether the session was
encrypted, and each message carries `X-Sink-TLS: yes|no` and `X-Sink-Auth: <user>|none`.
"""

import argparse
import asyncio
import json
import os
import ssl

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--maildir", required=True)
parser.add_argument("--log", required=True)
parser.add_argument("--security", choices=["none", "starttls", "tls"], default="none")
parser.add_argument("--cert")
parser.add_argument("--key")
parser.add_argument("--user")
args = parser.parse_args()
password = os.environ.get("SINK_PASSWORD", "")


def log(**event):
    with open(args.log, "a") as f:
        f.write(json.dumps(event) + "\n")


def encrypted(server):
    """Whether the server's session runs over TLS (STARTTLS done, or SMTPS)."""
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


class Sink(Mailbox):
    async def handle_DATA(self, server, session, envelope):
        message = self.prepare_message(session, envelope)
        tls = encrypted(server)
        user = session.auth_data.login.decode() if session.authenticated and session.auth_data else "none"
        message["X-Sink-TLS"] = "yes" if tls else "no"
        message["X-Sink-Auth"] = user
        self.handle_message(message)
        log(event="message", tls=tls, auth=user, rcpt=envelope.rcpt_tos)
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    """aiosmtpd's authenticator: (server, session, envelope, mechanism, auth_data) -> AuthResult.

    `handled=False` on failure lets aiosmtpd answer `535 5.7.8` (and keep the session)."""
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == args.user and auth_data.password.decode() == password
    login = auth_data.login.decode(errors="replace") if isinstance(auth_data, LoginPassword) else None
    log(event="auth", mechanism=mechanism, user=login, ok=ok, tls=encrypted(server))
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


context = None
if args.security != "none":
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)

handler = Sink(args.maildir)
loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)


def session():
    return SMTP(
        handler,
        hostname="sink.test",
        loop=loop,
        tls_context=context if args.security == "starttls" else None,
        require_starttls=False,
        auth_required=bool(args.user),
        auth_require_tls=False,
        authenticator=authenticator if args.user else None,
    )


smtps = context if args.security == "tls" else None
loop.run_until_complete(loop.create_server(session, host="127.0.0.1", port=args.port, ssl=smtps))
loop.run_forever()
