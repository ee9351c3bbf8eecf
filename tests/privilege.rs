//! Suite: privilege. Dropping root for real, in a child process: the test binary re-executes
//! itself with [`CHILD_ENV`] set and `--exact <this test>`, the child drops privileges and
//! checks the result from `/proc`, and the parent checks the child's report. Dropping in the
//! test process itself would break every other test. Skipped with a printed reason when not
//! root.

use std::process::Command;

use lokey::kernel::{KernelError, KernelPool};
use lokey::privilege::{
    CAP_SYS_ADMIN_MASK, Credentials, DropOutcome, DropPlan, PrivilegeError, capability_names,
    drop_privileges, inspect,
};
use nix::errno::Errno;

/// Set in the child process; its value is the test the child should run.
const CHILD_ENV: &str = "LOKEY_PRIVILEGE_TEST_CHILD";
/// uid and gid of `nobody`/`nogroup`, present on every Debian-family and most other systems.
const NOBODY: u32 = 65_534;

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// This suite's test names as libtest sees them (`privilege::<fn>`).
fn test_name(function: &str) -> String {
    let module = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, m)| m);
    format!("{module}::{function}")
}

/// Runs `function` in a child copy of this binary and returns its stdout; panics with the
/// child's output when it fails.
fn run_in_child(function: &str) -> String {
    run_in_child_with(function, &[])
}

/// [`run_in_child`] with extra environment variables for the child.
fn run_in_child_with(function: &str, env: &[(&str, &std::path::Path)]) -> String {
    let name = test_name(function);
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &name)
        .envs(env.iter().copied())
        .output()
        .expect("spawn the child test");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // `--exact` with a wrong name runs nothing and still succeeds: insist the test ran.
    assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
    stdout
}

fn in_child(function: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == test_name(function))
}

/// The child's one-line report, parsed back by the parent.
fn report_line(c: &Credentials) -> String {
    format!(
        "LOKEY-CHILD uid={:?} gid={:?} capeff={:016x} nnp={}",
        c.uids, c.gids, c.cap_eff, c.no_new_privs
    )
}

/// The drop as the child runs it; the harness runs this in a worker thread, so the
/// single-thread guard is turned off here (the main thread only waits for the result).
fn child_drop(keep_sys_admin: bool) -> Credentials {
    let plan = DropPlan {
        user: "lokey-test-no-such-user".to_owned(),
        fallback_user: Some("nobody".to_owned()),
        keep_sys_admin,
        require_single_thread: false,
    };
    let report = match drop_privileges(&plan).expect("drop privileges") {
        DropOutcome::Dropped(report) => report,
        DropOutcome::NotRoot(_) => panic!("the child runs as root"),
    };
    assert_eq!(
        report.fell_back_from.as_deref(),
        Some("lokey-test-no-such-user")
    );
    assert_eq!(report.user, "nobody");
    // Independently of the library's own verification, read what the kernel says now.
    let c = Credentials::of_current_thread().expect("read /proc/thread-self/status");
    assert_eq!(c, report.credentials);
    assert_eq!(c.uids, [NOBODY; 4]);
    assert_eq!(c.gids, [NOBODY; 4]);
    let kept = if keep_sys_admin {
        CAP_SYS_ADMIN_MASK
    } else {
        0
    };
    assert_eq!(
        (c.cap_eff, c.cap_prm, c.cap_bnd, c.cap_inh, c.cap_amb),
        (kept, kept, kept, 0, 0)
    );
    assert!(c.no_new_privs);
    println!("{}", report_line(&c));
    c
}

#[test]
fn dropping_with_crediting_keeps_exactly_cap_sys_admin() {
    const NAME: &str = "dropping_with_crediting_keeps_exactly_cap_sys_admin";
    if in_child(NAME) {
        child_drop(true);
        // Exactly CAP_SYS_ADMIN is enough for RNDADDENTROPY as an unprivileged user.
        let pool = KernelPool::open().expect("open /dev/random");
        pool.add_entropy(&[0x6Bu8; 32], 32)
            .expect("RNDADDENTROPY with CAP_SYS_ADMIN");
        // No longer root: a second call changes nothing and reports a clean inspection, the
        // state a systemd unit with AmbientCapabilities=CAP_SYS_ADMIN should produce.
        let again = DropPlan {
            require_single_thread: false,
            ..DropPlan::default()
        };
        let DropOutcome::NotRoot(inspection) = drop_privileges(&again).expect("inspect") else {
            panic!("a second drop must not act");
        };
        assert_eq!((inspection.extra, inspection.missing), (0, 0));
        assert_eq!(inspection.warnings(), Vec::<String>::new());
        println!("LOKEY-CHILD clean-inspection");
        return;
    }
    if !is_root() {
        crate::skipped!("skipped: dropping privileges needs root");
        return;
    }
    let stdout = run_in_child(NAME);
    let line = format!("uid=[{NOBODY}, {NOBODY}, {NOBODY}, {NOBODY}]");
    assert!(stdout.contains(&line), "{stdout}");
    assert!(
        stdout.contains("capeff=0000000000200000 nnp=true"),
        "{stdout}"
    );
    assert!(stdout.contains("LOKEY-CHILD clean-inspection"), "{stdout}");
}

#[test]
fn dropping_without_crediting_keeps_no_capability_and_rndaddentropy_reports_eperm() {
    const NAME: &str =
        "dropping_without_crediting_keeps_no_capability_and_rndaddentropy_reports_eperm";
    if in_child(NAME) {
        child_drop(false);
        let pool = KernelPool::open().expect("open /dev/random");
        let err = pool
            .add_entropy(&[0x6Bu8; 32], 32)
            .expect_err("no CAP_SYS_ADMIN");
        assert!(matches!(err, KernelError::PermissionDenied), "{err:?}");
        assert_eq!(err.errno(), Some(Errno::EPERM));
        assert!(err.to_string().contains("CAP_SYS_ADMIN"));
        // Mixing without credit still works: it needs no capability.
        pool.mix(&[0x6Bu8; 32]).expect("write(2) to /dev/random");
        println!("LOKEY-CHILD eperm-reported");
        return;
    }
    if !is_root() {
        crate::skipped!("skipped: dropping privileges needs root");
        return;
    }
    let stdout = run_in_child(NAME);
    assert!(
        stdout.contains("capeff=0000000000000000 nnp=true"),
        "{stdout}"
    );
    assert!(stdout.contains("LOKEY-CHILD eperm-reported"), "{stdout}");
}

/// Names the device node for [`an_i2c_node_the_user_may_not_open_names_node_group_and_rule`].
const NODE_ENV: &str = "LOKEY_PRIVILEGE_TEST_NODE";

#[test]
fn an_i2c_node_the_user_may_not_open_names_node_group_and_rule() {
    const NAME: &str = "an_i2c_node_the_user_may_not_open_names_node_group_and_rule";
    if in_child(NAME) {
        child_drop(false);
        let node = std::path::PathBuf::from(std::env::var(NODE_ENV).expect("node path"));
        let err = lokey::atecc::linux::check_node(&node).expect_err("a root-only node");
        assert!(
            matches!(err, lokey::atecc::linux::OpenError::Permission(_)),
            "{err:?}"
        );
        let text = err.to_string();
        for part in [node.to_str().unwrap(), "group i2c", "udev/60-lokey.rules"] {
            assert!(text.contains(part), "{text} lacks {part}");
        }
        println!("LOKEY-CHILD permission-named");
        return;
    }
    if !is_root() {
        eprintln!("skipped: opening a node as another user needs root");
        return;
    }
    // A root-only stand-in for /dev/i2c-1 (crw-rw---- root:i2c on a Pi without the udev rule;
    // the child, as nobody, is in neither).
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("i2c-1");
    std::fs::write(&node, b"").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o660)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Root itself may open it: the check is about the user, not the node being unusable.
    lokey::atecc::linux::check_node(&node).expect("root opens it");
    let stdout = run_in_child_with(NAME, &[(NODE_ENV, &node)]);
    assert!(stdout.contains("LOKEY-CHILD permission-named"), "{stdout}");
}

#[test]
fn a_missing_user_is_a_typed_error_before_anything_changes() {
    if !is_root() {
        crate::skipped!("skipped: the user lookup happens only when started as root");
        return;
    }
    let before = Credentials::of_current_thread().expect("status");
    let plan = DropPlan {
        user: "lokey-test-no-such-user".to_owned(),
        ..DropPlan::default()
    };
    let err = drop_privileges(&plan).expect_err("no such user");
    assert!(matches!(&err, PrivilegeError::UserNotFound(u) if u == "lokey-test-no-such-user"));
    assert!(err.to_string().contains("useradd"));
    assert_unchanged(&before);
}

/// The current thread's credentials are `before`'s. The process's thread count is not a
/// credential (other tests in this binary start and end threads meanwhile), so it is left out.
fn assert_unchanged(before: &Credentials) {
    let after = Credentials::of_current_thread().expect("status");
    assert_eq!(
        Credentials {
            threads: 0,
            ..after
        },
        Credentials {
            threads: 0,
            ..before.clone()
        }
    );
}

#[test]
fn dropping_in_a_multithreaded_process_is_refused() {
    if !is_root() {
        crate::skipped!("skipped: the thread check happens only when started as root");
        return;
    }
    // The harness runs this test in a worker thread, so the process has at least two threads;
    // guard anyway, since a real drop here would break the other tests.
    let before = Credentials::of_current_thread().expect("status");
    if Credentials::of_process().expect("status").threads < 2 {
        crate::skipped!("skipped: the test harness runs this test on its only thread");
        return;
    }
    let plan = DropPlan {
        user: "nobody".to_owned(),
        ..DropPlan::default()
    };
    let err = drop_privileges(&plan).expect_err("other threads exist");
    assert!(matches!(err, PrivilegeError::MultiThreaded(n) if n >= 2));
    assert_unchanged(&before);
}

#[test]
fn inspect_reports_extra_and_missing_capabilities() {
    let crediting = inspect(true).expect("inspect");
    let not = inspect(false).expect("inspect");
    let c = &crediting.credentials;
    assert_eq!(crediting.needed, CAP_SYS_ADMIN_MASK);
    assert_eq!(
        crediting.extra,
        (c.cap_eff | c.cap_prm | c.cap_amb) & !CAP_SYS_ADMIN_MASK
    );
    assert_eq!(not.extra, c.cap_eff | c.cap_prm | c.cap_amb);
    if is_root() {
        // Root holds everything: far more than needed, and the warnings say so.
        assert_eq!(crediting.missing, 0);
        let warnings = crediting.warnings().join("\n");
        assert!(warnings.contains("running as root"), "{warnings}");
        assert!(warnings.contains("CAP_NET_ADMIN"), "{warnings}");
    } else if c.cap_eff & CAP_SYS_ADMIN_MASK == 0 {
        crate::skipped!("skipped: the checks of root's extra capabilities (needs root)");
        assert_eq!(crediting.missing, CAP_SYS_ADMIN_MASK);
        assert!(crediting.warnings().join("\n").contains("EPERM"));
    } else {
        crate::skipped!(
            "skipped: the checks of root's extra capabilities (needs root) and of a missing \
             CAP_SYS_ADMIN (this process holds it)"
        );
    }
}

#[test]
fn proc_status_is_parsed() {
    let text = "Name:\tlokeyd\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n\
                Groups:\t998 65534 \nThreads:\t1\nCapInh:\t0000000000000000\n\
                CapPrm:\t0000000000200000\nCapEff:\t0000000000200000\nCapBnd:\t0000000000200000\n\
                CapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";
    let c = Credentials::parse(text).expect("valid status");
    assert_eq!(c.uids, [65_534; 4]);
    assert_eq!(c.groups, [998, 65_534]);
    assert_eq!(
        (c.cap_eff, c.cap_bnd, c.cap_amb),
        (CAP_SYS_ADMIN_MASK, CAP_SYS_ADMIN_MASK, 0)
    );
    assert!(c.no_new_privs);
    assert_eq!(c.threads, 1);
    let broken = text.replace("CapEff:\t0000000000200000", "CapEff:\tzz");
    assert!(matches!(
        Credentials::parse(&broken),
        Err(PrivilegeError::StatusFormat("CapEff"))
    ));
    assert!(matches!(
        Credentials::parse("Name:\tx\n"),
        Err(PrivilegeError::StatusFormat(_))
    ));
}

#[test]
fn capability_masks_are_named() {
    assert_eq!(capability_names(CAP_SYS_ADMIN_MASK), ["CAP_SYS_ADMIN"]);
    assert_eq!(capability_names(0), Vec::<String>::new());
    assert_eq!(capability_names(1 | 1 << 63), ["CAP_CHOWN", "CAP_63"]);
}
