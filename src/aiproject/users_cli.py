"""`aiproject users add|quota|disable|enable|list|invite|invites`: the operator's commands."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from aiproject.config import Settings
from aiproject.domain.rest.admin import AccountAdmin
from aiproject.errors import AiProjectError
from aiproject.store.db import Database


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``users`` command and its actions to the top-level parser."""
    users = sub.add_parser("users", help="Manage REST accounts and invite codes.")
    actions = users.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create an account whatever the registration policy")
    add.add_argument("username")
    add.add_argument("--email", required=True)
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin, not a prompt"
    )
    add.add_argument("--tokens", type=int, help="token quota (default: rest.token_quota)")
    add.add_argument("--pictures", type=int, help="picture quota (default: rest.picture_quota)")
    quota = actions.add_parser("quota", help="set (or --add to) a user's quotas")
    quota.add_argument("username")
    quota.add_argument("--tokens", type=int)
    quota.add_argument("--pictures", type=int)
    quota.add_argument("--add", action="store_true", help="add to the balance (may be negative)")
    for name, text in (("disable", "log out everywhere and refuse logins"), ("enable", "undo")):
        actions.add_parser(name, help=text).add_argument("username")
    actions.add_parser("list", help="list accounts and their quotas")
    invite = actions.add_parser("invite", help="make an invite code (shown once)")
    invite.add_argument("--uses", type=int, default=1)
    invite.add_argument("--days", type=float, help="valid for this many days (default: forever)")
    invite.add_argument("--note", default="")
    actions.add_parser("invites", help="list invite codes (without the codes)")
    return users


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AiProjectError("password-invalid", "the passwords differ")
    return first


async def _act(admin: AccountAdmin, args: argparse.Namespace) -> str:
    if args.action == "add":
        who = await admin.add(
            args.username, _password(args), args.email, tokens=args.tokens, pictures=args.pictures
        )
        return f"added {who.username} uuid={who.user_id}"
    if args.action == "quota":
        tokens, pictures = await admin.set_quota(
            args.username, tokens=args.tokens, pictures=args.pictures, add=args.add
        )
        return f"{args.username}: tokens={tokens} pictures={pictures}"
    if args.action in ("disable", "enable"):
        await admin.set_disabled(args.username, args.action == "disable")
        return f"{args.username}: {args.action}d"
    if args.action == "list":
        rows = [
            f"{u.username:<32} {u.email:<40} tokens={u.token_quota} pictures={u.picture_quota}"
            + (" disabled" if u.disabled else "")
            for u in await admin.users()
        ]
        return "\n".join(rows) or "no accounts"
    if args.action == "invite":
        new = await admin.invite(args.uses, days=args.days, note=args.note)
        until = new.expires_at.isoformat() if new.expires_at else "never"
        return f"invite {new.code} (id {new.id}, {new.uses} use(s), expires {until})"
    rows = [
        f"id={i.id} uses_left={i.uses_left} expires={i.expires_at or 'never'} {i.note}"
        for i in await admin.invite_list()
    ]
    return "\n".join(rows) or "no invites"


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one ``users`` action; print its outcome; 0 on success, 2 when refused."""

    async def main() -> str:
        db = Database(settings.resolved_database_url)
        try:
            await db.migrate()
            return await _act(AccountAdmin(db, settings), args)
        finally:
            await db.aclose()

    try:
        print(asyncio.run(main()))
    except AiProjectError as err:
        print(f"aiproject: {err.code}: {err.message}", file=sys.stderr)
        return 2
    return 0
