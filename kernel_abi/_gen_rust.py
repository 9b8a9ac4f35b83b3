"""Render the Rust definitions of the wire format (``abi.rs`` of the Rust client).

Called by ``python -m kernel_abi.gen`` beside the C header, from the same
dtypes and enums: ``#[repr(C)]`` structs with explicit padding, the request
payloads as a union, constants, enums with checked conversions from the raw
wire values, flag bits with their masks, and compile-time assertions of every
struct's size and every field's offset, so a layout drift fails the build.
"""

from __future__ import annotations

import enum
from pathlib import Path

import numpy as np

from . import _constants as c
from . import _layout as lay
from . import _rendezvous as rv

RUST_PATH = Path(__file__).parent / "rust" / "shmd-client" / "src" / "abi.rs"

_RTYPES = {
    ("u", 1): "u8",
    ("u", 2): "u16",
    ("u", 4): "u32",
    ("u", 8): "u64",
    ("i", 1): "i8",
    ("i", 2): "i16",
    ("i", 4): "i32",
    ("i", 8): "i64",
    ("f", 4): "f32",
    ("f", 8): "f64",
}

# Derives are limited by what std implements: Default only for arrays of <= 32.
_DEFAULT_MAX_ARRAY = 32

_PAYLOAD_STRUCTS = {mid: f"{mid.name.capitalize()}Payload" for mid in c.ModelId}

# (Rust struct name, dtype, what it is) of every plain struct, in emission order.
_STRUCTS: list[tuple[str, np.dtype, str]] = [
    *((_PAYLOAD_STRUCTS[mid], dt, f"The {mid.name.lower()} model's payload.") for mid, dt in lay.PAYLOADS.items()),
    ("Response", lay.RESPONSE, "A completion ring slot: one answer."),
    ("RingHeader", lay.RING_HEADER, "The header of a ring; each independently written field on its own block."),
    ("ChannelHeader", lay.CHANNEL_HEADER, "The first bytes of a channel segment."),
]

# (enum class, Rust name, repr type: the width of the wire field that carries it)
_ENUMS: list[tuple[type[enum.IntEnum], str, str]] = [
    (c.ModelId, "ModelId", "u16"),
    (c.Status, "Status", "u16"),
    (c.RingKind, "RingKind", "u32"),
    (c.Severity, "Severity", "u8"),
    (c.ThreatType, "ThreatType", "u8"),
    (c.RecommendedAction, "RecommendedAction", "u8"),
    (c.FailureType, "FailureType", "u8"),
    (c.AccessType, "AccessType", "u8"),
]

# (flag-bit enum, constant prefix, type of the flags field it lives in)
_FLAGS: list[tuple[type[enum.IntEnum], str, str]] = [
    (c.RequestFlagBit, "REQ_", "u32"),
    (c.ResponseFlagBit, "RESP_", "u16"),
    (c.RingFlagBit, "RING_", "u32"),
]


def _rtype(dt: np.dtype) -> str:
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        out = _RTYPES[(base.kind, base.itemsize)]
        for n in reversed(shape):
            out = f"[{out}; {n}]"
        return out
    return _RTYPES[(dt.kind, dt.itemsize)]


def _fields(dt: np.dtype) -> list[tuple[str, np.dtype, int]]:
    return sorted(((n, dt.fields[n][0], dt.fields[n][1]) for n in dt.names), key=lambda f: f[2])


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.lower().split("_"))


def _struct(name: str, dt: np.dtype, doc: str, types: dict[str, str] | None = None) -> list[str]:
    """A ``#[repr(C)]`` struct with explicit padding fields, so the layout cannot drift."""
    members, cursor, npad, longest = [], 0, 0, 0
    for fname, fdt, offset in _fields(dt):
        if offset > cursor:
            members += ["    #[doc(hidden)]", f"    pub _pad{npad}: [u8; {offset - cursor}],"]
            longest, npad = max(longest, offset - cursor), npad + 1
        members.append(f"    pub {fname}: {(types or {}).get(fname, _rtype(fdt))},")
        if fdt.subdtype is not None:
            longest = max(longest, *fdt.subdtype[1])
        cursor = offset + fdt.itemsize
    if dt.itemsize > cursor:
        members += ["    #[doc(hidden)]", f"    pub _pad{npad}: [u8; {dt.itemsize - cursor}],"]
        longest = max(longest, dt.itemsize - cursor)
    derives = ["Clone", "Copy"]
    if not types:  # a union member has neither Debug nor PartialEq
        derives += ["Debug", "PartialEq"]
        if longest <= _DEFAULT_MAX_ARRAY:
            derives.append("Default")
    return [f"/// {doc}", "#[repr(C)]", f"#[derive({', '.join(derives)})]", f"pub struct {name} {{", *members, "}", ""]


def _request() -> list[str]:
    union = [
        "/// The payload area of a request slot: one model's payload, by `model_id`.",
        "#[repr(C)]",
        "#[derive(Clone, Copy)]",
        "pub union RequestPayload {",
        *(f"    pub {mid.name.lower()}: {s}," for mid, s in _PAYLOAD_STRUCTS.items()),
        f"    pub raw: [u8; {lay.REQUEST_SLOT_SIZE - lay.PAYLOAD_OFFSET}],",
        "}",
        "",
    ]
    return union + _struct(
        "Request", lay.REQUEST, "A submission ring slot: one request.", {"payload": "RequestPayload"}
    )


def _enum(cls: type[enum.IntEnum], name: str, repr_: str) -> list[str]:
    members = list(cls)
    lines = [
        f"/// `{cls.__name__}` of kernel_abi/_constants.py, carried as `{repr_}` (or an output `f64`).",
        f"#[repr({repr_})]",
        "#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]",
        f"pub enum {name} {{",
        *(f"    {_camel(m.name)} = {int(m)}," for m in members),
        "}",
        "",
        f"impl {name} {{",
        f"    pub const ALL: [{name}; {len(members)}] = [{', '.join(f'{name}::{_camel(m.name)}' for m in members)}];",
        "",
        "    /// The member with this wire value, if any (values from shared memory are never trusted).",
        f"    pub const fn from_raw(value: u64) -> Option<{name}> {{",
        "        match value {",
        *(f"            {int(m)} => Some({name}::{_camel(m.name)})," for m in members),
        "            _ => None,",
        "        }",
        "    }",
        "",
        "    /// The name kernel_abi gives it, lower case (as the HTTP API spells it).",
        "    pub const fn name(self) -> &'static str {",
        "        match self {",
        *(f'            {name}::{_camel(m.name)} => "{m.name.lower()}",' for m in members),
        "        }",
        "    }",
        "}",
        "",
    ]
    return lines


def _model_tables() -> list[str]:
    """Per-model facts the client needs: payload size, field names, output names."""
    rows = ["impl ModelId {", "    /// `payload_len` of this model's requests."]
    rows += ["    pub const fn payload_len(self) -> u32 {"]
    rows += ["        match self {"]
    rows += [f"            ModelId::{_camel(m.name)} => {dt.itemsize}," for m, dt in lay.PAYLOADS.items()]
    rows += ["        }", "    }", ""]
    rows += [
        "    /// Payload field names in wire order; a response's 1-based `error_field` indexes them.",
        "    pub const fn field_names(self) -> &'static [&'static str] {",
        "        match self {",
    ]
    for m, dt in lay.PAYLOADS.items():
        names = ", ".join(f'"{n}"' for n in dt.names)
        rows.append(f"            ModelId::{_camel(m.name)} => &[{names}],")
    rows += ["        }", "    }", ""]
    rows += [
        "    /// What `Response::outputs` mean for this model (API names).",
        f"    pub const fn output_names(self) -> [&'static str; {c.N_OUTPUTS}] {{",
        "        match self {",
    ]
    for m, names in c.OUTPUT_NAMES.items():
        quoted = ", ".join(f'"{n}"' for n in names)
        rows.append(f"            ModelId::{_camel(m.name)} => [{quoted}],")
    rows += ["        }", "    }", "}", ""]
    return rows


def _assertions(name: str, dt: np.dtype) -> list[str]:
    out = [f'const _: () = assert!(size_of::<{name}>() == {dt.itemsize}, "{name} size");']
    for fname, _, offset in _fields(dt):
        out.append(f'const _: () = assert!(offset_of!({name}, {fname}) == {offset}, "{name}.{fname} offset");')
    return out


def _rendezvous() -> list[str]:
    """How a caller finds and holds a channel, and the wake-up rule (kernel_abi/_rendezvous.py)."""
    reserved = ", ".join(f'"{n}"' for n in rv.RESERVED_NAMES)
    return [
        "// Rendezvous (kernel_abi/_rendezvous.py): a prefix and a channel name are each",
        "// 1 to NAME_MAX characters of NAME_CHARS; channel C of prefix P is the POSIX",
        "// shared-memory object `segment_name(P, C)`; RESERVED_NAMES are never channels.",
        "// A client holds its channel with an F_SETLK F_WRLCK record lock on LOCK_LENGTH",
        "// byte(s) at LOCK_OFFSET of the segment.",
        "//",
        "// Wake-ups (futex, shared, never FUTEX_PRIVATE_FLAG): a consumer with nothing to",
        "// read loads wake_seq, sets RING_NEED_WAKEUP in flags, fences (SeqCst), re-checks",
        "// tail, and only then FUTEX_WAITs on wake_seq expecting the value it loaded; it",
        "// clears NEED_WAKEUP when it wakes. A producer release-stores tail, fences",
        "// (SeqCst), and if NEED_WAKEUP is set increments wake_seq and FUTEX_WAKEs it.",
        f"pub const NAME_MAX: usize = {rv.NAME_MAX};",
        f'pub const NAME_CHARS: &str = "{rv.NAME_CHARS}";',
        f'pub const STATS_NAME: &str = "{rv.STATS_NAME}";',
        f"pub const RESERVED_NAMES: [&str; {len(rv.RESERVED_NAMES)}] = [{reserved}];",
        f"pub const LOCK_OFFSET: i64 = {rv.LOCK_OFFSET};",
        f"pub const LOCK_LENGTH: i64 = {rv.LOCK_LENGTH};",
        f"pub const MAX_CHANNELS: usize = {rv.MAX_CHANNELS}; // per daemon: futex_waitv's limit",
        "",
        "/// The POSIX shared-memory name of `channel` under `prefix` (names already checked).",
        "pub fn segment_name(prefix: &str, channel: &str) -> String {",
        f'    format!("{rv.SEGMENT_NAME_FORMAT}")',  # Python's str.format fields read as Rust's inline format args
        "}",
        "",
    ]


def render() -> str:
    """The full text of ``abi.rs``."""
    out = [
        "// abi.rs: shmd's shared-memory wire format, for Rust callers.",
        "//",
        "// GENERATED by `python -m kernel_abi.gen` from kernel_abi/_layout.py and",
        "// kernel_abi/_constants.py (the C header shmd_abi.h comes from the same place).",
        "// Do not edit; change the Python and regenerate.",
        "//",
        "// All integers are little-endian. Ring indices (head, tail) are monotonically",
        "// increasing u64 counters; slot = index & (capacity - 1). A producer writes",
        "// slots, then publishes tail with a release store; a consumer acquire-loads",
        "// tail, reads, then publishes head with a release store. Strings travel as",
        "// their 64-bit FNV-1a hash over UTF-8 bytes.",
        "",
        "#![allow(dead_code)]",
        "",
        "use core::mem::{offset_of, size_of};",
        "",
        '#[cfg(not(target_endian = "little"))]',
        'compile_error!("the shmd wire format is little-endian");',
        "",
        f"pub const ABI_VERSION: u16 = {c.ABI_VERSION};",
        f"pub const RING_MAGIC: u64 = 0x{c.RING_MAGIC:016x}; // \"SHMDRING\"",
        f"pub const CHANNEL_MAGIC: u64 = 0x{c.CHANNEL_MAGIC:016x}; // \"SHMDCHAN\"",
        f"pub const CACHE_LINE: usize = {c.CACHE_LINE};",
        f"pub const BLOCK: usize = {c.BLOCK}; // each independently written header field has one",
        f"pub const N_OUTPUTS: usize = {c.N_OUTPUTS};",
        f"pub const REQUEST_SLOT_SIZE: usize = {lay.REQUEST_SLOT_SIZE};",
        f"pub const RESPONSE_SLOT_SIZE: usize = {lay.RESPONSE_SLOT_SIZE};",
        f"pub const PAYLOAD_OFFSET: usize = {lay.PAYLOAD_OFFSET};",
        f"pub const RING_HEADER_SIZE: usize = {lay.RING_HEADER_SIZE};",
        f"pub const CHANNEL_HEADER_SIZE: usize = {lay.CHANNEL_HEADER_SIZE};",
        "",
        *_rendezvous(),
    ]
    for cls, prefix, ty in _FLAGS:
        for m in cls:
            out.append(f"pub const {prefix}{m.name}_BIT: u32 = {int(m)};")
            out.append(f"pub const {prefix}{m.name}: {ty} = 1 << {prefix}{m.name}_BIT;")
    out.append("")
    for cls, name, repr_ in _ENUMS:
        out += _enum(cls, name, repr_)
    out += _model_tables()
    for name, dt, doc in _STRUCTS[:4]:
        out += _struct(name, dt, doc)
    out += _request()
    for name, dt, doc in _STRUCTS[4:]:
        out += _struct(name, dt, doc)
    for name, dt, _ in _STRUCTS:
        out += _assertions(name, dt)
    out += _assertions("Request", lay.REQUEST)
    out.append(
        f'const _: () = assert!(size_of::<RequestPayload>() == {lay.REQUEST_SLOT_SIZE - lay.PAYLOAD_OFFSET}, '
        '"RequestPayload size");'
    )
    for mid in _PAYLOAD_STRUCTS:
        out.append(f'const _: () = assert!(offset_of!(RequestPayload, {mid.name.lower()}) == 0, "union member");')
    out.append("")
    return "\n".join(out)
