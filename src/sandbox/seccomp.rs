//! Single-id mode's emulation of the calls a one-id user namespace refuses, as charliecloud's
//! `--seccomp` mode does: a classic BPF seccomp filter, built by hand (no libseccomp), that makes
//! them return 0 without doing anything.
//!
//! Emulated: `chown`, `fchown`, `lchown`, `fchownat`, `setuid`, `setgid`, `setreuid`, `setregid`,
//! `setresuid`, `setresgid`, `setgroups`, `setfsuid`, `setfsgid`, and `mknod`/`mknodat` of
//! character and block devices (fifos and regular files are still really created). So
//! `apt-get install` (dpkg chowns everything) and `useradd` succeed; the files stay owned by 0.
//! Only the native architecture's syscall numbers are filtered; other ABIs pass unfiltered.

/// The audit architecture of the native syscall ABI.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
/// Other architectures: no filter (single-id mode then fails with a clear error).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: u32 = 0;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JA: u16 = 0x05;
const BPF_AND_K: u16 = 0x54;
const BPF_RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
/// SECCOMP_RET_ERRNO with errno 0: the call "succeeds" and returns 0.
const RET_SUCCESS: u32 = 0x0005_0000;
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// Offset of the low 32 bits of argument `i` in `struct seccomp_data` (little-endian).
const fn off_arg(i: u32) -> u32 {
    16 + 8 * i
}

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The syscalls that always "succeed".
fn faked() -> Vec<u32> {
    let mut v = vec![
        libc::SYS_fchown,
        libc::SYS_fchownat,
        libc::SYS_setuid,
        libc::SYS_setgid,
        libc::SYS_setreuid,
        libc::SYS_setregid,
        libc::SYS_setresuid,
        libc::SYS_setresgid,
        libc::SYS_setgroups,
        libc::SYS_setfsuid,
        libc::SYS_setfsgid,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_chown, libc::SYS_lchown]);
    v.into_iter().map(|n| n as u32).collect()
}

/// `(syscall, index of its mode argument)` for the mknod family.
fn mknods() -> Vec<(u32, u32)> {
    #[allow(unused_mut)]
    let mut v = vec![(libc::SYS_mknodat as u32, 2)];
    #[cfg(target_arch = "x86_64")]
    v.push((libc::SYS_mknod as u32, 1));
    v
}

/// The filter program.
pub(crate) fn program() -> Vec<libc::sock_filter> {
    let faked = faked();
    let mknods = mknods();
    let mut p = vec![
        ins(BPF_LD_W_ABS, 0, 0, OFF_ARCH),
        ins(BPF_JEQ_K, 1, 0, AUDIT_ARCH),
        ins(BPF_RET_K, 0, 0, RET_ALLOW),
        ins(BPF_LD_W_ABS, 0, 0, OFF_NR),
    ];
    // Layout after the loads: [faked JEQs][3 per mknod][RET ALLOW][AND][JEQ CHR][JEQ BLK][RET ALLOW][RET SUCCESS]
    let n_faked = faked.len();
    let n_mknod = mknods.len() * 3;
    let success = n_faked + n_mknod + 5; // index (relative to the first JEQ) of RET SUCCESS
    let dev_check = n_faked + n_mknod + 1;
    for (i, nr) in faked.iter().enumerate() {
        p.push(ins(BPF_JEQ_K, (success - i - 1) as u8, 0, *nr));
    }
    for (j, (nr, arg)) in mknods.iter().enumerate() {
        let at = n_faked + 3 * j;
        p.push(ins(BPF_JEQ_K, 0, 2, *nr));
        p.push(ins(BPF_LD_W_ABS, 0, 0, off_arg(*arg)));
        p.push(ins(BPF_JA, 0, 0, (dev_check - (at + 2) - 1) as u32));
    }
    p.push(ins(BPF_RET_K, 0, 0, RET_ALLOW));
    p.push(ins(BPF_AND_K, 0, 0, libc::S_IFMT));
    p.push(ins(BPF_JEQ_K, 2, 0, libc::S_IFCHR));
    p.push(ins(BPF_JEQ_K, 1, 0, libc::S_IFBLK));
    p.push(ins(BPF_RET_K, 0, 0, RET_ALLOW));
    p.push(ins(BPF_RET_K, 0, 0, RET_SUCCESS));
    p
}

/// Installs the filter on the calling thread (inherited by children and across exec). The caller
/// must have CAP_SYS_ADMIN in its user namespace (it is root there) or no_new_privs set.
pub(crate) fn install() -> std::io::Result<()> {
    if AUDIT_ARCH == 0 {
        return Err(std::io::Error::from_raw_os_error(libc::ENOSYS));
    }
    let mut prog = program();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: fprog points at a valid filter array that outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program_and_on_a_return_or_check() {
        let p = program();
        let last = p.len() - 1;
        assert_eq!(p[last].k, RET_SUCCESS);
        for (i, f) in p.iter().enumerate() {
            if f.code == BPF_JEQ_K {
                assert!(i + 1 + (f.jt as usize) <= last && i + 1 + (f.jf as usize) <= last);
            }
            if f.code == BPF_JA {
                assert_eq!(p[i + 1 + f.k as usize].code, BPF_AND_K);
            }
        }
        // Each faked syscall jumps to RET SUCCESS.
        for (i, f) in p.iter().enumerate().skip(4).take(faked().len()) {
            assert_eq!(i + 1 + f.jt as usize, last);
        }
    }
}
