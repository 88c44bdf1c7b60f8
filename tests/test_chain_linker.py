"""chain/linker.py on small clang-compiled objects, loaded into a real SVM."""

import shutil
import subprocess

import pytest
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from chain.linker import EHDR, SHDR, LinkError, link

pytestmark = pytest.mark.skipif(shutil.which("clang") is None, reason="clang (apt) compiles the BPF objects")
CFLAGS = ["-target", "bpf", "-mcpu=v2", "-O2", "-fno-builtin", "-ffreestanding", "-fPIC", "-Wall", "-Werror"]

MAIN = r"""
typedef unsigned long u64;
extern void sol_log_(const char *, u64);
extern void sol_log_64_(u64, u64, u64, u64, u64);
u64 helper(u64 x);
typedef u64 (*fn)(u64);
static const char greeting[] = "hello from a linked program";
static const fn table[2] = {helper, helper};
u64 entrypoint(const unsigned char *input) {
    sol_log_(greeting, sizeof(greeting) - 1);
    sol_log_64_(table[input[0] & 1](41), 0, 0, 0, 0);
    return 0;
}
"""
HELPER = r"""
typedef unsigned long u64;
static __attribute__((noinline)) u64 twice(u64 x) { return 2 * x; }
__attribute__((noinline)) u64 helper(u64 x) { return twice(x) + 1; }
"""


def compile_c(tmp_path, name, source):
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    subprocess.run(["clang", *CFLAGS, "-c", str(src), "-o", str(tmp_path / f"{name}.o")], check=True)
    return tmp_path / f"{name}.o"


def run_program(so: bytes) -> list[str]:
    svm, program, payer = LiteSVM(), Pubkey.new_unique(), Keypair()
    svm.add_program(program, so)
    svm.airdrop(payer.pubkey(), 10**9)
    tx = Transaction(
        [payer], Message([Instruction(program, b"", [])], payer.pubkey()), svm.latest_blockhash()
    )
    return list(svm.send_transaction(tx).logs())


def test_linked_objects_run_with_rodata_cross_object_calls_and_function_tables(tmp_path):
    so = link([compile_c(tmp_path, "main", MAIN), compile_c(tmp_path, "helper", HELPER)])
    logs = run_program(so)
    assert "Program log: hello from a linked program" in logs
    assert "Program log: 0x53, 0x0, 0x0, 0x0, 0x0" in logs  # helper(41) = 2 * 41 + 1


def test_linking_is_deterministic(tmp_path):
    objects = [compile_c(tmp_path, "main", MAIN), compile_c(tmp_path, "helper", HELPER)]
    assert link(objects) == link(objects)


def test_output_is_an_sbpf_v0_shared_object_with_addresses_equal_to_offsets(tmp_path):
    so = link([compile_c(tmp_path, "main", MAIN), compile_c(tmp_path, "helper", HELPER)])
    hdr = EHDR.unpack_from(so)
    e_type, e_machine, e_flags, shoff, shnum = hdr[1], hdr[2], hdr[7], hdr[6], hdr[12]
    assert (so[7], e_type, e_machine, e_flags) == (0, 3, 247, 0)  # OSABI none, ET_DYN, EM_BPF, sBPF v0
    for i in range(1, shnum):
        _name, _type, flags, addr, offset, *_ = SHDR.unpack_from(so, shoff + i * SHDR.size)
        if flags & 2:  # SHF_ALLOC
            assert addr == offset


def test_a_writable_global_is_refused(tmp_path):
    obj = compile_c(tmp_path, "counter", "int counter; int entrypoint(void) { return ++counter; }")
    with pytest.raises(LinkError, match="writable section .bss"):
        link([obj])


def test_an_undefined_function_that_is_not_a_syscall_is_refused(tmp_path):
    obj = compile_c(
        tmp_path, "missing", "extern int frobnicate(void); int entrypoint(void) { return frobnicate(); }"
    )
    with pytest.raises(LinkError, match="frobnicate"):
        link([obj])


def test_a_missing_entrypoint_is_refused(tmp_path):
    with pytest.raises(LinkError, match="entry point"):
        link([compile_c(tmp_path, "helper", HELPER)])


def test_a_file_that_is_not_a_bpf_object_is_refused(tmp_path):
    (tmp_path / "x.o").write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(LinkError):
        link([tmp_path / "x.o"])
