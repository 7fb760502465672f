"""A client of spec 01 (the government-service assistant) running the whole flow.

    handshake (HTTP 10925) -> face_predict (3304) -> face_train (WS 444/4444) -> qna (WS)
    -> storage (HTTP) -> summary (HTTP)

Usage (a server started with `aiproject serve`):

    python examples/assistant_client.py --user u1 --text "我要换身份证" \\
        --face me1.jpg --face me2.jpg --face me3.jpg
    python examples/assistant_client.py --user u1 --audio request.wav --answers answers.json

Questions are answered at the terminal, or from --answers: a JSON object whose keys are
words of a question ("身份证", "民族", "电话") and whose values are the answers; a question
no key matches is answered "跳过". Needs only httpx and websockets.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException


class Assistant:
    """The three surfaces of one server."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.host = args.host
        self.http = httpx.AsyncClient(base_url=f"http://{args.host}:{args.http_port}", timeout=300)
        self.ws_ports: list[int] = args.ws_port
        self.tools_port: int = args.tools_port

    async def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST a flow message; wait and retry while the answer is processing or busy."""
        for _ in range(60):
            reply = await self.http.post("/", json=body)
            answer: dict[str, Any] = reply.json()
            if answer["type"] not in ("processing", "busy"):
                if answer["type"] == "error":
                    raise SystemExit(f"{body['type']}: {answer['reason']} ({answer['detail']})")
                return answer
            await asyncio.sleep(float(reply.headers.get("retry-after", "2")))
        raise SystemExit(f"{body['type']}: the server stayed busy")

    async def flow_socket(self) -> ClientConnection:
        """Open the flow socket: port 444, else its fallback."""
        for port in self.ws_ports:
            try:
                return await connect(f"ws://{self.host}:{port}/", max_size=2**24)
            except (OSError, WebSocketException):
                continue
        raise SystemExit(f"no flow socket on ports {self.ws_ports}")

    async def recognise(self, image: bytes) -> str:
        """Return who face_predict recognises in one picture ("" if nobody)."""
        url = f"ws://{self.host}:{self.tools_port}/face_predict"
        async with connect(url, max_size=2**24) as ws:
            await ws.send(image)
            reply = json.loads(await ws.recv())
        print(f"face_predict: {reply['message']} {reply.get('reason', reply['user_id'])}")
        return str(reply["user_id"]) if reply["message"] == "success" else ""

    async def enrol(self, user_id: str, hash_: str, images: list[bytes]) -> bool:
        """Send pictures to face_train until it answers success or fail."""
        async with await self.flow_socket() as ws:
            await ws.send(json.dumps({"user_id": user_id, "hash": hash_, "type": "face_train"}))
            for image in images:
                await ws.send(image)
                reply = json.loads(await ws.recv())
                print(f"face_train: {reply['message']} {reply.get('reason', '')}".rstrip())
                if reply["message"] in ("success", "fail"):
                    return bool(reply["message"] == "success")
        return False

    async def interview(self, user_id: str, hash_: str, answers: dict[str, str] | None) -> None:
        """Answer the qna questions until the server sends the empty message."""
        async with await self.flow_socket() as ws:
            await ws.send(json.dumps({"user_id": user_id, "type": "qna", "hash": hash_}))
            while True:
                question = await ws.recv()
                if question == "":
                    return
                if isinstance(question, bytes) or question.startswith("{"):
                    print(f"qna: {question!r}")
                    if '"error"' in str(question) and '"text-too-long"' not in str(question):
                        return
                    continue
                answer = pick_answer(question, answers)
                print(f"问：{question}\n答：{answer}")
                await ws.send(answer)


def pick_answer(question: str, answers: dict[str, str] | None) -> str:
    """Return the answer to a question: from the table, or typed at the terminal."""
    if answers is None:
        return input(f"{question}\n> ").strip() or "跳过"
    for keyword, answer in answers.items():
        if keyword in question:
            return answer
    return "跳过"


def read_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Read the files the command line names (before the event loop starts)."""
    if args.audio:
        media = base64.b64encode(Path(args.audio).read_bytes()).decode()
        request: dict[str, Any] = {"type": "audio", "media": media}
    else:
        request = {"type": "text", "text": args.text}
    return {
        "input": request,
        "info": json.loads(Path(args.info).read_text("utf-8")) if args.info else {},
        "faces": [Path(path).read_bytes() for path in args.face],
        "answers": json.loads(Path(args.answers).read_text("utf-8")) if args.answers else None,
    }


async def run(args: argparse.Namespace, inputs: dict[str, Any]) -> int:
    """Run the whole flow once."""
    assistant = Assistant(args)
    body = {"user_id": args.user, "type": "handshake", "info": inputs["info"]}
    shake = await assistant.post({**body, "input": inputs["input"]})
    print(f"classify: {shake['classify'] or '（未识别）'}\nflow: {shake['flow']}\n")
    if not shake["classify"]:
        return 1
    hash_ = shake["hash"]
    faces: list[bytes] = inputs["faces"]
    if faces and await assistant.recognise(faces[-1]) != args.user:
        await assistant.enrol(args.user, hash_, faces)
    await assistant.interview(args.user, hash_, inputs["answers"])
    stored = await assistant.post({"user_id": args.user, "type": "storage", "hash": hash_})
    print("\nstorage:", json.dumps(stored["output"], ensure_ascii=False, indent=2))
    summary = await assistant.post({"user_id": args.user, "type": "summary", "hash": hash_})
    print("summary:", json.dumps(summary["output"], ensure_ascii=False, indent=2))
    await assistant.http.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the flow."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=10925)
    parser.add_argument("--ws-port", type=int, action="append", default=None)
    parser.add_argument("--tools-port", type=int, default=3304)
    parser.add_argument("--user", required=True, help="the citizen's user_id")
    parser.add_argument("--text", default="我要办身份证", help="the request, in writing")
    parser.add_argument("--audio", help="the request, spoken: a WAV/OGG/WebM/MP3 file")
    parser.add_argument("--info", help="a JSON file: what the backend knows (the info object)")
    parser.add_argument("--face", action="append", default=[], help="a picture (repeat)")
    parser.add_argument("--answers", help="a JSON file of keyword -> answer")
    args = parser.parse_args(argv)
    args.ws_port = args.ws_port or [444, 4444]
    return asyncio.run(run(args, read_inputs(args)))


if __name__ == "__main__":
    sys.exit(main())
