"""kernel_abi: the checked-in C header matches the Python dtypes, byte for byte."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kernel_abi as abi
from kernel_abi import gen

pytestmark = pytest.mark.timeout(60)

INCLUDE = Path(gen.HEADER_PATH).parent
STRICT = ["-Wall", "-Wextra", "-Werror", "-pedantic"]


def test_header_is_regenerated_identically(tmp_path: Path) -> None:
    """The checked-in header is exactly what the generator writes now."""
    out = tmp_path / "shmd_abi.h"
    assert gen.main(["--out", str(out)]) == 0
    assert out.read_text() == gen.HEADER_PATH.read_text(), "stale header: run `python -m kernel_abi.gen`"
    # The CLI's --check mode agrees, so `make test` catches the same drift.
    check = subprocess.run([sys.executable, "-m", "kernel_abi.gen", "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_gen_check_flags_a_stale_header(tmp_path: Path) -> None:
    stale = tmp_path / "shmd_abi.h"
    stale.write_text(gen.HEADER_PATH.read_text().replace("SHMD_ABI_VERSION", "SHMD_ABI_VERSIO", 1))
    assert gen.main(["--check", "--out", str(stale)]) == 1


def test_gen_check_covers_the_rust_abi(tmp_path: Path) -> None:
    """The Rust client's abi.rs is generated too: current in the tree, and a stale copy fails --check."""
    from kernel_abi import _gen_rust

    assert _gen_rust.RUST_PATH.read_text() == _gen_rust.render(), "stale abi.rs: run `python -m kernel_abi.gen`"
    stale = tmp_path / "abi.rs"
    stale.write_text(_gen_rust.RUST_PATH.read_text().replace("offset_of!(Response, status) == 8", "true", 1))
    assert gen.main(["--check", "--rust-out", str(stale)]) == 1


def _layout_program() -> str:
    """A C program printing `struct field offset size` for every row of layout_rows()."""
    lines = ['#include <stdio.h>', '#include "shmd_abi.h"', "int main(void) {"]
    for struct, field, _, _ in gen.layout_rows():
        if field:
            lines.append(
                f'    printf("%s %s %zu %zu\\n", "{struct}", "{field}", offsetof(struct {struct}, {field}), '
                f"sizeof(((struct {struct} *)0)->{field}));"
            )
        else:
            lines.append(f'    printf("%s - 0 %zu\\n", "{struct}", sizeof(struct {struct}));')
    return "\n".join([*lines, "    return 0;", "}", ""])


@pytest.mark.parametrize(
    ("compiler", "std", "suffix"),
    [("gcc", "-std=c11", "c"), ("g++", "-std=c++17", "cpp")],
)
def test_compiled_layout_matches_dtypes(tmp_path: Path, compiler: str, std: str, suffix: str) -> None:
    """sizeof/offsetof of every struct and field, as the compiler sees them, equal the dtypes."""
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not installed")
    src = tmp_path / f"layout.{suffix}"
    src.write_text(_layout_program())
    exe = tmp_path / "layout"
    build = subprocess.run(
        [compiler, std, *STRICT, f"-I{INCLUDE}", str(src), "-o", str(exe)], capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
    got = {}
    for line in run.stdout.splitlines():
        struct, field, offset, size = line.split()
        got[(struct, "" if field == "-" else field)] = (int(offset), int(size))
    expected = {(s, f): (o, n) for s, f, o, n in gen.layout_rows()}
    assert got == expected


def test_layout_rows_come_from_the_dtypes() -> None:
    """layout_rows is not a second definition: spot-check it against the dtypes themselves."""
    rows = {(s, f): (o, n) for s, f, o, n in gen.layout_rows()}
    assert rows[("shmd_request", "")] == (0, abi.REQUEST.itemsize)
    assert rows[("shmd_response", "")] == (0, abi.RESPONSE.itemsize)
    assert rows[("shmd_ring_header", "")] == (0, abi.RING_HEADER.itemsize)
    for name in abi.RING_HEADER.names:
        assert rows[("shmd_ring_header", name)][0] == abi.RING_HEADER.fields[name][1]
    for mid, dt in abi.PAYLOADS.items():
        for name in dt.names:
            offset = rows[("shmd_request", f"payload.{mid.name.lower()}.{name}")][0]
            assert offset == abi.PAYLOAD_OFFSET + dt.fields[name][1]
            # The per-model request dtype aliases the same bytes.
            assert abi.REQUESTS[mid].fields["payload"][1] + dt.fields[name][1] == offset


def test_slots_are_cache_line_multiples() -> None:
    for dt in (abi.REQUEST, abi.RESPONSE, *abi.REQUESTS.values()):
        assert dt.itemsize % abi.CACHE_LINE == 0, dt
    assert abi.REQUEST.itemsize == abi.REQUEST_SLOT_SIZE
    assert all(dt.itemsize == abi.REQUEST_SLOT_SIZE for dt in abi.REQUESTS.values())
    assert abi.RESPONSE.itemsize == abi.RESPONSE_SLOT_SIZE
    assert abi.PAYLOAD_OFFSET + abi.PAYLOAD_SIZE <= abi.REQUEST_SLOT_SIZE
    # Ring headers and slot arrays start on block boundaries inside a channel.
    assert abi.RING_HEADER_SIZE % abi.BLOCK == 0
    assert abi.CHANNEL_HEADER_SIZE % abi.BLOCK == 0


# Which side writes each ring-header field; fields of different writers must not share a block.
RING_WRITERS = {
    "magic": "creator",
    "abi_version": "creator",
    "slot_size": "creator",
    "capacity": "creator",
    "kind": "creator",
    "tail": "producer-index",
    "head": "consumer-index",
    "flags": "consumer-flags",
    "full_events": "producer-counters",
    "produced": "producer-counters",
    "wake_seq": "producer-counters",  # the producer bumps it to wake a sleeping consumer
    "consumed": "consumer-counters",
    "corrupt_events": "consumer-counters",
}


def test_ring_header_fields_of_different_writers_have_their_own_block() -> None:
    assert set(RING_WRITERS) == set(abi.RING_HEADER.names), "a new ring-header field needs a writer here"
    blocks: dict[int, set[str]] = {}
    for name in abi.RING_HEADER.names:
        dt, offset = abi.RING_HEADER.fields[name][:2]
        first, last = offset // abi.BLOCK, (offset + dt.itemsize - 1) // abi.BLOCK
        assert first == last, f"{name} straddles a block boundary"
        blocks.setdefault(first, set()).add(RING_WRITERS[name])
    for block, writers in blocks.items():
        assert len(writers) == 1, f"block {block} is written by {sorted(writers)}"
    # The two indices, the hottest words, sit on distinct blocks.
    assert abi.RING_HEADER.fields["tail"][1] // abi.BLOCK != abi.RING_HEADER.fields["head"][1] // abi.BLOCK


def test_constants() -> None:
    assert abi.RING_MAGIC.to_bytes(8, "little") == b"SHMDRING"
    assert abi.CHANNEL_MAGIC.to_bytes(8, "little") == b"SHMDCHAN"
    assert abi.RING_NEED_WAKEUP == 1 << abi.RingFlagBit.NEED_WAKEUP
    assert 0 not in {int(m) for m in abi.ModelId}
    assert {s.name for s in abi.Status} >= {
        "OK", "INVALID_INPUT", "UNKNOWN_MODEL", "DEADLINE_EXCEEDED", "OVERLOADED", "INTERNAL"
    }
    assert np.dtype(abi.RESPONSE["outputs"]).shape == (abi.N_OUTPUTS,)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0xCBF29CE484222325),
        ("a", 0xAF63DC4C8601EC8C),
        ("foobar", 0x85944171F73967E8),
    ],
)
def test_hash_str_known_vectors(text: str, expected: int) -> None:
    assert abi.hash_str(text) == expected


def test_hash_str_is_utf8() -> None:
    assert abi.hash_str("é") != abi.hash_str("e")
    assert 0 <= abi.hash_str("agent-Ω") < 1 << 64
