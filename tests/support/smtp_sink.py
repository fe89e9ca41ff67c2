#!/usr/bin/env python3
"""A real SMTP server for the notification tests: aiosmtpd, delivering each accepted message into a Maildir.

    smtp_sink.py serve --port PORT --maildir DIR [--control FILE]
        Listens on 127.0.0.1:PORT and prints "ready" on stdout once it accepts connections. Every message is
        written to DIR/new (Maildir: tmp/ then rename, so a reader never sees half a message) with X-MailFrom and
        X-RcptTo headers. FILE, when present, is JSON re-read at every command, to script failures:
            {"mail": "554 5.7.1 relay access denied",
             "rcpt": {"someone@example.it": "550 5.1.1 <someone@example.it>: user unknown"},
             "rcpt_all": "451 4.3.0 try again later",
             "data": "452 4.3.1 insufficient storage",
             "delay_ms": 20, "ack_delay_ms": 20}
        (mail: the answer to MAIL FROM; data: to the message's end; delay_ms: before the message is stored;
        ack_delay_ms: after it is stored, before the 250.)
        ("down" is simply the server not running: the test stops it and starts it again on the same port.)

    smtp_sink.py decode --maildir DIR
        Prints a JSON list of the delivered messages, decoded with Python's email package (an independent MIME
        parser): message_id, subject, from, to, rcpt_to, date, auto_submitted, text, html, file.

Exits 3 with a message on stderr when aiosmtpd is missing (CI installs it: python3 -m pip install aiosmtpd).
"""

import argparse
import asyncio
import email
import email.policy
import hashlib
import json
import mailbox
import os
import signal
import sys


def load_control(path):
    if not path or not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class Sink:
    def __init__(self, maildir, control):
        self.maildir = mailbox.Maildir(maildir, create=True)
        self.control = control

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        answer = load_control(self.control).get("mail")
        if answer:
            return answer
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        c = load_control(self.control)
        answer = c.get("rcpt", {}).get(address.lower()) or c.get("rcpt_all")
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        c = load_control(self.control)
        if c.get("delay_ms"):
            await asyncio.sleep(c["delay_ms"] / 1000)
        if c.get("data"):
            return c["data"]
        headers = "X-MailFrom: {}\r\nX-RcptTo: {}\r\n".format(envelope.mail_from, ", ".join(envelope.rcpt_tos))
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        key = self.maildir.add(headers.encode("ascii") + content)
        if c.get("ack_delay_ms"):
            # Delivered but not yet acknowledged: a client killed now has sent it without knowing.
            await asyncio.sleep(c["ack_delay_ms"] / 1000)
        return "250 2.0.0 OK queued as " + key.split(".")[0]


async def serve(args):
    from aiosmtpd.smtp import SMTP

    handler = Sink(args.maildir, args.control)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="smtp-sink.test", data_size_limit=10 * 1024 * 1024),
        host="127.0.0.1",
        port=args.port,
        reuse_address=True,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


def decode(args):
    box = mailbox.Maildir(args.maildir, create=False)
    out = []
    for key in sorted(box.keys()):
        path = os.path.join(args.maildir, "new", key)
        if not os.path.exists(path):
            path = os.path.join(args.maildir, "cur", key)
        with open(path, "rb") as f:
            msg = email.message_from_binary_file(f, policy=email.policy.default)
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        out.append(
            {
                "file": key,
                "message_id": msg["Message-ID"],
                "subject": str(msg["Subject"]),
                "from": str(msg["From"]),
                "to": str(msg["To"]),
                "rcpt_to": str(msg["X-RcptTo"]),
                "date": str(msg["Date"]),
                "auto_submitted": str(msg["Auto-Submitted"]),
                "content_type": msg.get_content_type(),
                "text": text.get_content() if text is not None else None,
                "html": html.get_content() if html is not None else None,
                "attachments": [
                    {
                        "filename": part.get_filename(),
                        "content_type": part.get_content_type(),
                        "sha256": hashlib.sha256(part.get_content()).hexdigest(),
                    }
                    for part in msg.iter_attachments()
                ],
            }
        )
    json.dump(out, sys.stdout, ensure_ascii=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--maildir", required=True)
    s.add_argument("--control")
    d = sub.add_parser("decode")
    d.add_argument("--maildir", required=True)
    args = parser.parse_args()
    if args.command == "decode":
        decode(args)
        return
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        print("aiosmtpd is not installed: python3 -m pip install aiosmtpd", file=sys.stderr)
        sys.exit(3)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
