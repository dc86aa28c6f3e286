// LD_PRELOAD library: this CPU, as an AVX2-only CPU (no AVX-512, no VNNI, no AMX) looks to
// whatever asks CPUID, so ONNX Runtime, ffmpeg and the rest take their AVX2 code paths, natively.
//
// Why: ONNX Runtime runs int8 convolutions with VNNI where the CPU has it and with AVX2's
// `vpmaddubsw` (16-bit sums that can saturate) where it does not, and clearbg runs ISNet in int8
// on every CPU. This machine has VNNI; with this library the other path can be measured here,
// speed and masks (bench/int8_avx2.sh, eval/int8_cpu.py). Its masks are bit for bit those of
// ONNX Runtime under `qemu-x86_64 -cpu Haswell-v4` (eval/RESULTS.md), which emulates such a CPU.
//
// How: arch_prctl(ARCH_SET_CPUID, 0) makes the CPUID instruction fault in this process (Linux
// 4.12+, and the CPU or hypervisor must support CPUID faulting; threads inherit it, and every
// child process loads this library again through LD_PRELOAD). The SIGSEGV handler runs the real
// CPUID with faulting briefly off, clears the feature bits, and steps over the instruction.
//
//   gcc -O2 -shared -fPIC scripts/avx2_only.c -o avx2_only.so
//   LD_PRELOAD=$PWD/avx2_only.so COMMAND...
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define BIT(n) (1u << (n))

static void answer_cpuid(int sig, siginfo_t *info, void *context) {
    (void)info;
    greg_t *regs = ((ucontext_t *)context)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)regs[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) {  // a real segfault: let it kill the process as usual
        signal(sig, SIG_DFL);
        return;
    }
    unsigned leaf = (unsigned)regs[REG_RAX], sub = (unsigned)regs[REG_RCX], a, b, c, d;
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __cpuid_count(leaf, sub, a, b, c, d);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    if (leaf == 7 && sub == 0) {
        // AVX512 F, DQ, IFMA, PF, ER, CD, BW, VL
        b &= ~(BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31));
        // AVX512 VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ
        c &= ~(BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14));
        // AVX512 4VNNIW, 4FMAPS, VP2INTERSECT; AMX BF16, AVX512 FP16, AMX TILE, AMX INT8
        d &= ~(BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25));
    } else if (leaf == 7 && sub == 1) {
        a &= ~(BIT(4) | BIT(5) | BIT(23));  // AVX-VNNI, AVX512 BF16, AVX-IFMA
    } else if (leaf == 0xd && sub == 0) {
        a &= ~(BIT(5) | BIT(6) | BIT(7) | BIT(17) | BIT(18));  // AVX-512 and AMX register state
    }
    regs[REG_RAX] = a, regs[REG_RBX] = b, regs[REG_RCX] = c, regs[REG_RDX] = d;
    regs[REG_RIP] += 2;  // CPUID is two bytes
}

__attribute__((constructor)) static void hide_features(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = answer_cpuid;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &action, NULL);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        perror("avx2_only: arch_prctl(ARCH_SET_CPUID) (no CPUID faulting here)");
        _exit(99);
    }
}
