"""Read-only access to the token shards written by ``data prepare`` (memory-mapped), with the
checks a training job needs before step 0: shard integrity, vocab and sequence length.

torch-free: numpy memmaps only, so inspecting shards never pulls in torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from data.cli import BadInput, read_json

FORMAT = "prunelaw-shards/1"


class ShardSet:
    """The shards of one ``data prepare`` output directory.

    Opening checks every shard's size and array shape against the manifest (cheap: catches
    truncation); ``verify()`` or ``ShardSet(path, verify=True)`` also re-hashes the bytes
    (catches corruption). Both raise BadInput naming the shard.
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = False) -> None:
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            raise BadInput(f"{str(self.path)!r} is not a shard directory (no manifest.json); "
                           f"write one with 'data prepare'")
        manifest = read_json(manifest_path, "shard manifest")
        self.manifest: dict = manifest if isinstance(manifest, dict) else {}
        if self.manifest.get("format") != FORMAT:
            raise BadInput(f"{str(manifest_path)!r} has format {self.manifest.get('format')!r}; expected {FORMAT}")
        try:
            self.seq_len: int = int(self.manifest["seq_len"])
            self.vocab_size: int = int(self.manifest["vocab_size"])
            self.eos_id: int = int(self.manifest["tokenizer"]["eos_id"])
            self.tokenizer_path: Path = self.path / self.manifest["tokenizer"]["path"]
            self.manifest["splits"].items()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadInput(f"shard manifest {str(manifest_path)!r} is incomplete ({exc!r} missing or bad); "
                           f"re-run 'data prepare'") from None
        self._arrays: dict[tuple[str, str], np.ndarray] = {}
        self._fds: dict[tuple[str, str], int] = {}
        for split, domain in self._entries():
            self._check_size(split, domain)
        if verify:
            self.verify()

    @property
    def domains(self) -> list[str]:
        """Training domains (those with train sequences), in manifest order."""
        return [d for d, s in self.manifest["splits"].get("train", {}).items() if s["sequences"] > 0]

    def split_domains(self, split: str) -> list[str]:
        """Domains with at least one sequence in ``split`` (eval can hold eval-only domains such
        as news; a domain whose eval text is shorter than one sequence is left out)."""
        return [d for d, s in self.manifest["splits"].get(split, {}).items() if s["sequences"] > 0]

    def _entries(self) -> list[tuple[str, str]]:
        return [(split, d) for split, ds in self.manifest["splits"].items() for d in ds]  # empty ones too

    def _info(self, split: str, domain: str) -> dict:
        try:
            return self.manifest["splits"][split][domain]
        except KeyError:
            have = ", ".join(self.split_domains(split)) or "none"
            raise BadInput(f"no {split!r} shard for domain {domain!r} in {str(self.path)!r}; domains: {have}") from None

    def _check_size(self, split: str, domain: str) -> None:
        info = self._info(split, domain)
        file = self.path / info["file"]
        size = file.stat().st_size if file.is_file() else -1
        if size != info["bytes"]:
            raise BadInput(f"shard {str(file)!r} is missing or truncated: {size} bytes on disk, "
                           f"manifest says {info['bytes']}; re-run 'data prepare'")

    def verify(self) -> None:
        """Re-hash every shard against the manifest's sha256 (reads all bytes once)."""
        from data.prepare import sha256_file

        for split, domain in self._entries():
            info = self._info(split, domain)
            if sha256_file(self.path / info["file"]) != info["sha256"]:
                raise BadInput(f"shard {str(self.path / info['file'])!r} is corrupted (sha256 differs from "
                               f"the manifest); re-run 'data prepare'")

    def sequences(self, split: str, domain: str) -> np.ndarray:
        """Memory-mapped [n, seq_len] token ids (uint16/uint32) of one domain's split."""
        key = (split, domain)
        if key not in self._arrays:
            info = self._info(split, domain)
            arr = np.load(self.path / info["file"], mmap_mode="r")
            if arr.shape != (info["sequences"], self.seq_len):
                raise BadInput(f"shard {str(self.path / info['file'])!r} has shape {arr.shape}; manifest says "
                               f"({info['sequences']}, {self.seq_len}); re-run 'data prepare'")
            self._arrays[key] = arr
        return self._arrays[key]

    def read_rows(self, split: str, domain: str, rows: np.ndarray) -> np.ndarray:
        """Copy of the given rows ``[len(rows), seq_len]``, read with ``pread``.

        The training loader uses this instead of indexing the memmap: scattered reads through
        a mapping leave every touched page (plus kernel read-around) mapped into the process,
        so its resident memory would grow with the corpus; ``pread`` maps nothing.
        """
        arr = self.sequences(split, domain)  # validates the shape; gives the header offset
        key = (split, domain)
        if key not in self._fds:
            self._fds[key] = os.open(self.path / self._info(split, domain)["file"], os.O_RDONLY)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(self._fds[key], 0, 0, os.POSIX_FADV_RANDOM)
        out = np.empty((len(rows), self.seq_len), dtype=arr.dtype)
        row_bytes = self.seq_len * arr.dtype.itemsize
        for i, row in enumerate(np.asarray(rows, dtype=np.int64)):
            if not 0 <= row < len(arr):
                raise IndexError(f"row {row} outside [0, {len(arr)}) of {split}/{domain}")
            got = os.preadv(self._fds[key], [memoryview(out[i]).cast("B")], arr.offset + int(row) * row_bytes)
            if got != row_bytes:
                raise BadInput(f"shard {split}/{domain}.npy in {str(self.path)!r} is truncated; re-run 'data prepare'")
        return out

    def close(self) -> None:
        """Close the file descriptors opened by ``read_rows``."""
        fds = getattr(self, "_fds", {})  # absent when __init__ failed early
        for fd in fds.values():
            os.close(fd)
        fds.clear()

    def __del__(self) -> None:
        self.close()

    def num_sequences(self, split: str, domain: str) -> int:
        """Number of sequences of one domain's split (from the manifest, no file access)."""
        return int(self._info(split, domain)["sequences"])

    def num_tokens(self, split: str, domain: str | None = None) -> int:
        """Tokens in one domain's split, or in the whole split when ``domain`` is None."""
        domains = [domain] if domain else self.split_domains(split)
        return sum(int(self._info(split, d)["tokens"]) for d in domains)


def check_vocab(shards: ShardSet, model_vocab: int) -> None:
    """BadInput unless every token id of the shards fits the model's embedding table.

    A model's vocab may be larger than the tokenizer's (Qwen2.5 pads 151,665 to 151,936),
    never smaller.
    """
    if shards.vocab_size > model_vocab:
        raise BadInput(f"tokenizer vocab {shards.vocab_size} (shards {str(shards.path)!r}) does not fit the "
                       f"model's vocab {model_vocab}; prepare the shards with the model's tokenizer")


def check_seq_len(seq_len: int, max_positions: int) -> None:
    """BadInput when sequences are longer than the model's ``max_position_embeddings``."""
    if seq_len > max_positions:
        raise BadInput(f"seq-len {seq_len} exceeds the model's max positions {max_positions}; "
                       f"use --seq-len <= {max_positions}")
