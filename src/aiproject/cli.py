"""The `aiproject` command: serve, doctor, prepare."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from aiproject import __version__
from aiproject.config import Settings, Surface, describe_settings_error, load_settings
from aiproject.errors import AiProjectError
from aiproject.logs import configure

if TYPE_CHECKING:
    from aiproject.engines.models import ModelStore


def _settings(args: argparse.Namespace) -> Settings:
    """Load the settings, or say what is wrong with them and exit with status 2."""
    config: Path | None = args.config
    if config is not None and not config.is_file():
        print(f"aiproject: config file not found: {config}", file=sys.stderr)
        raise SystemExit(2)
    try:
        return load_settings(config)
    except (ValidationError, ValueError) as err:
        print(f"aiproject: invalid settings:\n{describe_settings_error(err)}", file=sys.stderr)
        raise SystemExit(2) from None


def _serve(args: argparse.Namespace) -> int:
    from aiproject.server import serve

    settings = _settings(args)
    configure(settings.log_level, settings.log_format)
    only = Surface(args.only) if args.only else None
    try:
        asyncio.run(serve(settings, only, warm=args.preload))
    except AiProjectError as err:
        print(f"aiproject: {err.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from aiproject import doctor
    from aiproject.engines.models import ModelStore, Progress
    from aiproject.engines.registry import Engines

    settings = _settings(args)
    configure("warning", settings.log_format)

    async def run() -> list[doctor.Check]:
        engines = Engines(settings, ModelStore(settings.resolved_models_dir, Progress.auto()))
        try:
            return await doctor.run(
                settings, engines, smoke=not args.no_smoke, show_secrets=args.show_secrets
            )
        finally:
            await engines.aclose()

    checks = asyncio.run(run())
    print(doctor.render(checks))
    ok = doctor.healthy(checks)
    print("doctor: all required parts work" if ok else "doctor: some required parts are broken")
    return 0 if ok else 1


def _prepare(args: argparse.Namespace) -> int:
    from aiproject.engines.image.efficientnet_onnx import convert_efficientnet_lite0
    from aiproject.engines.models import ModelStore, Progress

    settings = _settings(args)
    configure("info", settings.log_format)
    store = ModelStore(settings.resolved_models_dir, Progress(enabled=True))
    try:
        for name, prepare in (
            ("asr", store.whisper_base),
            ("llm", lambda: _prepare_llm(store, settings)),
            ("image", lambda: store.efficientnet_onnx(convert_efficientnet_lite0)),
            ("tts", store.kokoro_onnx),
        ):
            print(f"{name}: {prepare()}")
    except AiProjectError as err:
        print(f"aiproject: {err.message}", file=sys.stderr)
        return 2
    return 0


def _prepare_llm(store: ModelStore, settings: Settings) -> str:
    llm = settings.engines.llm
    if llm.backend != "llama_cpp" or llm.model_path is not None:
        return "nothing to prepare (a configured model_path or server)"
    return str(store.llm_gguf(llm.model))


def _simulate(args: argparse.Namespace) -> int:
    from aiproject.domain.lingxi.tokens import current_token
    from aiproject.simulate import simulate_lingxi

    settings = _settings(args)
    listen = settings.surfaces.http
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen.host, listen.host)
    base_url = args.url or f"http://{host}:{listen.port}"
    token = args.token or current_token(settings)
    if not token:
        print("aiproject: no Lingxi token: pass --token or start the server once", file=sys.stderr)
        return 2
    kinds = args.kinds or ["chat", "report", "reset", "get"]
    return asyncio.run(
        simulate_lingxi(
            base_url, token, kinds=kinds, device_id=args.device_id, message=args.message
        )
    )


def _users(args: argparse.Namespace) -> int:
    from aiproject import users_cli

    settings = _settings(args)
    configure("warning", settings.log_format)
    return users_cli.run(settings, args)


def parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    top = argparse.ArgumentParser(prog="aiproject", description=__doc__)
    top.add_argument("--version", action="version", version=f"aiproject {__version__}")
    sub = top.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--config", type=Path, help="TOML settings file (or AIPROJECT_CONFIG)")
        return command

    serve = add("serve", "Serve every surface (or one) on its port.")
    serve.add_argument("--only", choices=[s.value for s in Surface], help="serve one surface")
    serve.add_argument(
        "--preload", action="store_true", help="load every engine before accepting requests"
    )
    serve.set_defaults(func=_serve)
    doctor = add("doctor", "Check engines, ports and the database; non-zero exit if broken.")
    doctor.add_argument("--no-smoke", action="store_true", help="load engines without smoke tests")
    doctor.add_argument(
        "--show-secrets", action="store_true", help="print generated tokens in full"
    )
    doctor.set_defaults(func=_doctor)
    prepare = add("prepare", "Prepare the embedded models in the models dir (idempotent).")
    prepare.set_defaults(func=_prepare)
    simulate = add("simulate", "Act as a platform against a running server and print its events.")
    simulate.add_argument("platform", choices=["lingxi"], help="which platform to simulate")
    simulate.add_argument("--url", help="server base URL (default: the configured HTTP surface)")
    simulate.add_argument("--token", help="bearer token (default: configured or generated)")
    simulate.add_argument(
        "--kind",
        dest="kinds",
        action="append",
        choices=["chat", "report", "reset", "get"],
        help="request type to send (repeatable; default: all, in the spec's order)",
    )
    simulate.add_argument("--device-id", help="device id (default: the spec's 669C4BDA13EA)")
    simulate.add_argument("--message", help="what the user says in the chat request")
    simulate.set_defaults(func=_simulate)
    from aiproject.users_cli import add_parser

    users = add_parser(sub)
    users.add_argument("--config", type=Path, help="TOML settings file (or AIPROJECT_CONFIG)")
    users.set_defaults(func=_users)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
