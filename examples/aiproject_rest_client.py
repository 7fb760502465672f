"""A client of the AiProject REST API (spec 02): register, log in, chat, stream, hear, read.

Start a server (``aiproject serve --only http``), then::

    .venv/bin/python examples/aiproject_rest_client.py http://127.0.0.1:8000
    .venv/bin/python examples/aiproject_rest_client.py http://127.0.0.1:8000 \\
        --audio speech.wav --picture page.jpg --username demo42 --password 'secret words'

Without ``--audio``/``--picture`` it sends the repository's test fixtures. Only ``httpx`` is
needed. Every answer is printed as it arrives; a non-zero ``code`` stops the script.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import httpx

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def check(step: str, response: httpx.Response) -> dict[str, Any]:
    """Print an answer and stop on a refusal (a non-zero ``code``)."""
    body: dict[str, Any] = response.json()
    print(f"{step}: HTTP {response.status_code} {json.dumps(body, ensure_ascii=False)}")
    if body.get("code") != 0:
        sys.exit(f"{step} failed: {body.get('code')}: {body.get('msg')}")
    return body


def stream_answer(client: httpx.Client, identity: dict[str, str], question: str) -> None:
    """Print a streamed answer frame by frame (one JSON object per line)."""
    body = {**identity, "dialog": [{"role": "user", "content": question}]}
    with client.stream("POST", "/textModel/stream", json=body) as response:
        if response.headers.get("content-type", "").startswith("application/json"):
            response.read()
            check("stream", response)
            return
        print("stream: ", end="", flush=True)
        for line in response.iter_lines():
            frame = json.loads(line)
            header = frame["header"]
            if header["code"] != 0:
                sys.exit(f"\nstream failed: {header['code']}: {header['message']}")
            print(frame["payload"]["choices"]["text"][0]["content"], end="", flush=True)
            if header["status"] == 2:
                print(f"\nstream usage: {frame['payload']['usage']['text']}")


def main() -> None:
    """Run every endpoint once against the server named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--username", default=f"demo_{secrets.token_hex(3)}")
    parser.add_argument("--password", default=secrets.token_urlsafe(12))
    parser.add_argument("--audio", type=Path, default=FIXTURES / "speech" / "zh_weather.wav")
    parser.add_argument("--picture", type=Path, default=FIXTURES / "images" / "ocr-zh-en.png")
    parser.add_argument("--question", default="用一句话介绍你自己。")
    args = parser.parse_args()

    with httpx.Client(base_url=args.url, timeout=httpx.Timeout(300, connect=10)) as client:
        account = {
            "username": args.username,
            "password": args.password,
            "email": f"{args.username}@example.com",
        }
        registered = client.post("/auth/register", json=account).json()
        if registered.get("code") not in (0, "USER_NAME_REPEAT"):
            sys.exit(f"register failed: {registered}")
        print(f"register: {registered}")
        login = check(
            "login",
            client.post("/auth/login", json={"username": args.username, "password": args.password}),
        )
        identity = {"uuid": login["uuid"], "username": args.username}

        dialog = [
            {"role": "system", "content": "你是一个乐于助人的助手。"},
            {"role": "user", "content": args.question},
        ]
        check("chat", client.post("/textModel/chat", json={**identity, "dialog": dialog}))
        stream_answer(client, identity, args.question)

        audio = args.audio.read_bytes()
        if args.audio.suffix.lower() in (".pcm", ".wav"):
            voice = client.post("/voiceModel/chat", files={"file": (args.audio.name, audio)})
        else:  # raw 16 kHz mono PCM16 as the body
            voice = client.post("/voiceModel/chat", content=audio)
        check("voice", voice)

        picture = args.picture.read_bytes()
        check("picture", client.post("/PictureToTextModel/chat", content=picture, headers=identity))


if __name__ == "__main__":
    main()
