"""Link clang's relocatable BPF objects into a Solana sBPF v0 shared object.

No available linker produces what the Solana loader accepts (see
`../shared/notes/solana-sbf.md`), so the project owns this one. Input: ET_REL EM_BPF objects from
`clang -target bpf -mcpu=v2 -fPIC -c`. Output: an ET_DYN EM_BPF ELF with e_flags 0, laid out so that
every loaded section has `sh_addr == sh_offset`:

    ELF header | program headers | .text | .rodata | .dynamic | .dynsym | .dynstr | .rel.dyn |
    .shstrtab | section headers

Relocations, by kind (the loader's rules, anza-xyz/sbpf `src/elf.rs`):

- `R_BPF_64_32` on a `call`: to a function defined in some object it becomes a pc-relative
  immediate (no dynamic relocation); to an undefined symbol it is a syscall, kept as imm -1 with a
  dynamic `R_BPF_64_32` naming it (the loader patches in the murmur3 hash of the name).
- `R_BPF_64_64` on `lddw`: the link-time address goes into the two immediate halves and a dynamic
  `R_BPF_64_RELATIVE` makes the loader add the program region's base.
- `R_BPF_64_ABS64` (a pointer stored in read-only data): the u32 address at offset + 4, zero at
  the offset, and a dynamic `R_BPF_64_RELATIVE`.

Writable data (`.data`, `.bss` with content) does not exist on Solana and is refused; debug
sections are dropped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

EM_BPF = 247
ET_REL, ET_DYN = 1, 3
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOBITS, SHT_REL, SHT_DYNSYM, SHT_DYNAMIC = 1, 2, 3, 8, 9, 11, 6
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
SHN_UNDEF, SHN_ABS = 0, 0xFFF1
STB_LOCAL, STB_GLOBAL = 0, 1
STT_NOTYPE, STT_FUNC, STT_SECTION = 0, 2, 3
PT_LOAD, PT_DYNAMIC = 1, 2
PF_X, PF_W, PF_R = 1, 2, 4
R_BPF_64_64, R_BPF_64_ABS64, R_BPF_64_ABS32, R_BPF_64_NODYLD32 = 1, 2, 3, 4
R_BPF_64_RELATIVE, R_BPF_64_32 = 8, 10
DT_NULL, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT = 0, 5, 6, 10, 11
DT_REL, DT_RELSZ, DT_RELENT, DT_TEXTREL, DT_FLAGS, DF_TEXTREL = 17, 18, 19, 22, 30, 4

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
SHDR = struct.Struct("<IIQQQQIIQQ")
PHDR = struct.Struct("<IIQQQQQQ")
SYM = struct.Struct("<IBBHQQ")
REL = struct.Struct("<QQ")
DYN = struct.Struct("<qQ")
HEADERS_END = EHDR.size + 4 * PHDR.size
# Undefined functions with these names are syscalls; anything else (clang's memcpy, __multi3, a
# typo) is a link error here rather than an UnresolvedSymbol at deploy time.
SYSCALL_PREFIXES = ("sol_", "abort")


class LinkError(Exception):
    """The objects cannot be made into a program the Solana loader accepts; the message says why."""


@dataclass
class Section:
    index: int
    name: str
    type: int
    flags: int
    data: bytes
    align: int
    link: int
    info: int


@dataclass
class Symbol:
    name: str
    bind: int
    type: int
    shndx: int
    value: int


@dataclass
class ObjectFile:
    path: str
    sections: list[Section]
    symbols: list[Symbol]

    def relocations_for(self, target: int) -> list[tuple[int, int, int]]:
        """(offset, type, symbol index) of every relocation applied to section `target`."""
        out = []
        for sec in self.sections:
            if sec.type == SHT_REL and sec.info == target:
                for off, info in REL.iter_unpack(sec.data):
                    out.append((off, info & 0xFFFFFFFF, info >> 32))
        return out


def read_object(path: str | Path) -> ObjectFile:
    raw = Path(path).read_bytes()
    if raw[:4] != b"\x7fELF" or raw[4] != 2 or raw[5] != 1:
        raise LinkError(f"{path}: not a 64-bit little-endian ELF file")
    hdr = EHDR.unpack_from(raw)
    e_type, e_machine, shoff, shentsize, shnum, shstrndx = hdr[1], hdr[2], hdr[6], hdr[11], hdr[12], hdr[13]
    if e_type != ET_REL or e_machine != EM_BPF:
        raise LinkError(f"{path}: expected a relocatable BPF object (clang -target bpf -c)")
    heads = [SHDR.unpack_from(raw, shoff + i * shentsize) for i in range(shnum)]
    names_off = heads[shstrndx][4]
    sections = []
    for i, (name, typ, flags, _addr, off, size, link, info, align, _ent) in enumerate(heads):
        data = bytes(size) if typ == SHT_NOBITS else raw[off : off + size]
        sections.append(Section(i, _cstr(raw, names_off + name), typ, flags, data, max(align, 1), link, info))
    symbols: list[Symbol] = []
    for sec in sections:
        if sec.type == SHT_SYMTAB:
            strtab = sections[sec.link].data
            for name, info, _other, shndx, value, _size in SYM.iter_unpack(sec.data):
                symbols.append(Symbol(_cstr(strtab, name), info >> 4, info & 0xF, shndx, value))
    return ObjectFile(str(path), sections, symbols)


def _cstr(buf: bytes, off: int) -> str:
    return buf[off : buf.index(b"\0", off)].decode()


def _is_text(sec: Section) -> bool:
    return sec.type == SHT_PROGBITS and sec.flags & SHF_ALLOC and sec.flags & SHF_EXECINSTR


def _is_rodata(sec: Section) -> bool:
    return (
        sec.type == SHT_PROGBITS
        and bool(sec.flags & SHF_ALLOC)
        and (sec.name.startswith(".rodata") or sec.name.startswith(".data.rel.ro"))
    )


def _check_no_writable_data(obj: ObjectFile) -> None:
    for sec in obj.sections:
        writable = sec.flags & SHF_ALLOC and sec.flags & SHF_WRITE and not _is_rodata(sec)
        if writable and sec.data:
            raise LinkError(
                f"{obj.path}: writable section {sec.name} is not supported on Solana "
                "(no mutable globals: keep state in accounts)"
            )


@dataclass
class Layout:
    """Where each input section lands in the output image."""

    text: bytearray = field(default_factory=bytearray)
    rodata: bytearray = field(default_factory=bytearray)
    place: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)

    def append(self, key: tuple[int, int], region: str, sec: Section) -> None:
        buf = self.text if region == "text" else self.rodata
        buf.extend(b"\0" * (-len(buf) % sec.align))
        self.place[key] = (region, len(buf))
        buf.extend(sec.data)


def link(objects: list[str | Path], entry: str = "entrypoint") -> bytes:
    """Link the objects into the bytes of a loadable program whose entry point is `entry`."""
    objs = [read_object(p) for p in objects]
    for obj in objs:
        _check_no_writable_data(obj)
    layout = Layout()
    for i, obj in enumerate(objs):
        for sec in obj.sections:
            if _is_text(sec):
                layout.append((i, sec.index), "text", sec)
    for i, obj in enumerate(objs):
        for sec in obj.sections:
            if _is_rodata(sec):
                layout.append((i, sec.index), "rodata", sec)
    if not layout.text:
        raise LinkError("no .text in any object")
    text_addr = _align(HEADERS_END, 8)
    rodata_addr = _align(text_addr + len(layout.text), 8)
    bases = {"text": text_addr, "rodata": rodata_addr}

    def address(obj_i: int, sym: Symbol) -> int | None:
        if sym.shndx in (SHN_UNDEF, SHN_ABS) or (obj_i, sym.shndx) not in layout.place:
            return None
        region, off = layout.place[(obj_i, sym.shndx)]
        return bases[region] + off + sym.value

    globals_: dict[str, int] = {}
    for i, obj in enumerate(objs):
        for sym in obj.symbols:
            addr = address(i, sym)
            if sym.bind == STB_GLOBAL and addr is not None:
                if sym.name in globals_:
                    raise LinkError(f"{obj.path}: duplicate definition of {sym.name}")
                globals_[sym.name] = addr
    if entry not in globals_:
        raise LinkError(f"entry point {entry!r} is not defined")

    image = {"text": layout.text, "rodata": layout.rodata}
    syscalls: list[str] = []
    dyn_relocs: list[tuple[int, int, str | None]] = []
    for i, obj in enumerate(objs):
        for (obj_i, shndx), (region, sec_off) in layout.place.items():
            if obj_i != i:
                continue
            buf = image[region]
            for off, rtype, sym_i in obj.relocations_for(shndx):
                sym = obj.symbols[sym_i]
                where = sec_off + off
                addr = address(i, sym) if sym.bind == STB_LOCAL else globals_.get(sym.name)
                pc = bases[region] + where
                reloc = _apply(buf, where, rtype, sym, addr, pc, obj.path)
                if reloc == R_BPF_64_32:
                    if sym.name not in syscalls:
                        syscalls.append(sym.name)
                    dyn_relocs.append((pc, R_BPF_64_32, sym.name))
                elif reloc == R_BPF_64_RELATIVE:
                    dyn_relocs.append((pc, R_BPF_64_RELATIVE, None))
    return _emit(layout, text_addr, rodata_addr, globals_[entry], entry, syscalls, dyn_relocs)


def _apply(buf: bytearray, where: int, rtype: int, sym: Symbol, addr: int | None, pc: int, path: str) -> int:
    """Patch one relocation in place; return the dynamic relocation type it needs (0 for none)."""
    if rtype == R_BPF_64_32:
        if addr is None:
            if not sym.name.startswith(SYSCALL_PREFIXES):
                raise LinkError(f"{path}: undefined function {sym.name!r} (not a Solana syscall)")
            return R_BPF_64_32
        (imm,) = struct.unpack_from("<i", buf, where + 4)
        addend = (imm + 1) * 8 if sym.type == STT_SECTION else 0
        struct.pack_into("<i", buf, where + 4, (addr + addend - (pc + 8)) // 8)
        return 0
    if addr is None:
        raise LinkError(f"{path}: undefined symbol {sym.name!r} used as data")
    if rtype == R_BPF_64_64:
        (lo,) = struct.unpack_from("<I", buf, where + 4)
        target = addr + lo
        struct.pack_into("<I", buf, where + 4, target & 0xFFFFFFFF)
        struct.pack_into("<I", buf, where + 12, target >> 32)
        return R_BPF_64_RELATIVE
    if rtype == R_BPF_64_ABS64:
        (addend,) = struct.unpack_from("<Q", buf, where)
        struct.pack_into("<II", buf, where, 0, addr + addend)
        return R_BPF_64_RELATIVE
    names = {R_BPF_64_ABS32: "R_BPF_64_ABS32", R_BPF_64_NODYLD32: "R_BPF_64_NODYLD32"}
    raise LinkError(f"{path}: relocation {names.get(rtype, rtype)} against {sym.name!r} is not supported")


def _align(n: int, a: int) -> int:
    return n + (-n % a)


class _Strings:
    def __init__(self) -> None:
        self.data = bytearray(b"\0")

    def add(self, s: str) -> int:
        off = len(self.data)
        self.data += s.encode() + b"\0"
        return off


def _emit(
    layout: Layout,
    text_addr: int,
    rodata_addr: int,
    entry_addr: int,
    entry: str,
    syscalls: list[str],
    dyn_relocs: list[tuple[int, int, str | None]],
) -> bytes:
    dynstr = _Strings()
    dynsym = bytearray(SYM.size)
    dynsym += SYM.pack(dynstr.add(entry), (STB_GLOBAL << 4) | STT_FUNC, 0, 1, entry_addr, 0)
    sym_index = {}
    for name in syscalls:
        sym_index[name] = len(dynsym) // SYM.size
        dynsym += SYM.pack(dynstr.add(name), (STB_GLOBAL << 4) | STT_NOTYPE, 0, SHN_UNDEF, 0, 0)
    reldyn = b"".join(REL.pack(off, (sym_index[n] << 32 if n else 0) | t) for off, t, n in dyn_relocs)

    dynamic_addr = _align(rodata_addr + len(layout.rodata), 8)
    dynamic_size = 10 * DYN.size
    dynsym_addr = dynamic_addr + dynamic_size
    dynstr_addr = dynsym_addr + len(dynsym)
    reldyn_addr = _align(dynstr_addr + len(dynstr.data), 8)
    dynamic = b"".join(
        DYN.pack(tag, val)
        for tag, val in [
            (DT_FLAGS, DF_TEXTREL),
            (DT_REL, reldyn_addr),
            (DT_RELSZ, len(reldyn)),
            (DT_RELENT, REL.size),
            (DT_SYMTAB, dynsym_addr),
            (DT_SYMENT, SYM.size),
            (DT_STRTAB, dynstr_addr),
            (DT_STRSZ, len(dynstr.data)),
            (DT_TEXTREL, 0),
            (DT_NULL, 0),
        ]
    )
    shstr = _Strings()
    body = bytearray(text_addr)
    sections = [(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]

    def put(
        name: str, typ: int, flags: int, data: bytes, align: int, link: int = 0, entsize: int = 0
    ) -> None:
        body.extend(b"\0" * (-len(body) % align))
        off = len(body)
        body.extend(data)
        info = 1 if typ == SHT_DYNSYM else 0
        sections.append((shstr.add(name), typ, flags, off, off, len(data), link, info, align, entsize))

    put(".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, bytes(layout.text), 8)
    put(".rodata", SHT_PROGBITS, SHF_ALLOC, bytes(layout.rodata), 8)
    put(".dynamic", SHT_DYNAMIC, SHF_ALLOC | SHF_WRITE, dynamic, 8, link=5, entsize=DYN.size)
    put(".dynsym", SHT_DYNSYM, SHF_ALLOC, bytes(dynsym), 8, link=5, entsize=SYM.size)
    put(".dynstr", SHT_STRTAB, SHF_ALLOC, bytes(dynstr.data), 1)
    put(".rel.dyn", SHT_REL, SHF_ALLOC, reldyn, 8, link=4, entsize=REL.size)
    shstrtab_name = shstr.add(".shstrtab")
    body.extend(b"\0" * (-len(body) % 8))
    sections.append((shstrtab_name, SHT_STRTAB, 0, 0, len(body), len(shstr.data), 0, 0, 1, 0))
    body.extend(shstr.data)
    assert sections[3][3] == dynamic_addr and sections[4][3] == dynsym_addr and sections[6][3] == reldyn_addr

    shoff = _align(len(body), 8)
    body.extend(b"\0" * (shoff - len(body)))
    for sh in sections:
        body.extend(SHDR.pack(*sh))
    text_end = text_addr + len(layout.text)
    dyn_end = reldyn_addr + len(reldyn)
    phdrs = [
        (PT_LOAD, PF_R | PF_X, text_addr, len(layout.text)),
        (PT_LOAD, PF_R, rodata_addr, len(layout.rodata)),
        (PT_LOAD, PF_R, dynsym_addr, dyn_end - dynsym_addr),
        (PT_DYNAMIC, PF_R | PF_W, dynamic_addr, dynamic_size),
    ]
    assert rodata_addr >= text_end
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = EHDR.pack(
        ident,
        ET_DYN,
        EM_BPF,
        1,
        entry_addr,
        EHDR.size,
        shoff,
        0,
        EHDR.size,
        PHDR.size,
        4,
        SHDR.size,
        len(sections),
        len(sections) - 1,
    )
    body[: EHDR.size] = header
    for i, (typ, flags, addr, size) in enumerate(phdrs):
        PHDR.pack_into(body, EHDR.size + i * PHDR.size, typ, flags, addr, addr, addr, size, size, 8)
    return bytes(body)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Link clang BPF objects into a Solana sBPF v0 program")
    parser.add_argument("objects", nargs="+", help="relocatable objects from clang -target bpf -c")
    parser.add_argument("-o", "--output", required=True, help="the .so to write")
    parser.add_argument("--entry", default="entrypoint")
    args = parser.parse_args(argv)
    try:
        so = link(args.objects, args.entry)
    except LinkError as exc:
        raise SystemExit(f"link: {exc}") from None
    Path(args.output).write_bytes(so)


if __name__ == "__main__":
    main()
