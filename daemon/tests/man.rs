//! The manual pages in `man/` describe the flags, commands and keys that exist, and nothing
//! that does not.

mod util;

use std::collections::BTreeSet;

fn man(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../man/");
    std::fs::read_to_string(format!("{path}{name}")).unwrap()
}

/// Long flags (`--name`) in text; in roff they are written `\-\-name`.
fn long_flags(text: &str) -> BTreeSet<String> {
    // Font escapes (\fB, \fI, \fR) separate words in roff.
    let text = text
        .replace("\\-", "-")
        .replace("\\fB", " ")
        .replace("\\fI", " ")
        .replace("\\fR", " ");
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter_map(|w| w.strip_prefix("--"))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn help(mut cmd: std::process::Command) -> String {
    let out = cmd.arg("--help").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn lokeyd_8_documents_exactly_the_flags_of_lokeyd() {
    let page = man("lokeyd.8");
    let options = page
        .split(".SH OPTIONS")
        .nth(1)
        .unwrap()
        .split(".SH ")
        .next()
        .unwrap();
    assert_eq!(long_flags(options), long_flags(&help(util::lokeyd())));
}

/// Flags in roff text: `(long, short)`, `--name` written `\-\-name` and `-x` written `\-x`.
fn flags(text: &str) -> (BTreeSet<String>, BTreeSet<char>) {
    let text = text
        .replace("\\-", "-")
        .replace("\\fB", " ")
        .replace("\\fI", " ")
        .replace("\\fR", " ");
    let words = || text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'));
    let short = words()
        .filter_map(|w| w.strip_prefix('-'))
        .filter_map(|w| match w.as_bytes() {
            [c] if c.is_ascii_alphanumeric() => Some(char::from(*c)),
            _ => None,
        })
        .collect();
    (long_flags(&text), short)
}

/// The flags a `--help` text lists under `Options:`, read from the option lines themselves
/// (`  -o, --output <FILE>`), not from the descriptions; `--help`, `--version` and the global
/// global options (`--socket`, `--remote`, `--pin`, `--cacert`) left out.
fn help_flags(help: &str) -> (BTreeSet<String>, BTreeSet<char>) {
    let (mut long, mut short) = (BTreeSet::new(), BTreeSet::new());
    let options = help.split("Options:").nth(1).unwrap_or("");
    for line in options.lines().map(str::trim_start) {
        if !line.starts_with('-') {
            continue;
        }
        // The option part ends where the description begins (two spaces in short help).
        let spec = line.split("  ").next().unwrap_or("");
        for word in spec.split([',', ' ']) {
            if let Some(name) = word.strip_prefix("--") {
                long.insert(name.to_string());
            } else if let Some(name) = word.strip_prefix('-')
                && let [c] = name.as_bytes()
            {
                short.insert(char::from(*c));
            }
        }
    }
    // The global options, documented once under OPTIONS.
    for skip in ["help", "version", "socket", "remote", "pin", "cacert"] {
        long.remove(skip);
    }
    short.remove(&'h');
    short.remove(&'V');
    (long, short)
}

/// The subcommands a `--help` text lists, without `help`.
fn help_commands(help: &str) -> Vec<String> {
    let Some(list) = help.split("Commands:").nth(1) else {
        return Vec::new();
    };
    list.split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// `lokey ARGS --help`.
fn lokey_help(args: &[String]) -> String {
    let mut cmd = util::lokey_cmd();
    cmd.args(args);
    help(cmd)
}

/// Every command line of `lokey` below `path` that has its own `--help`: `["bytes"]`,
/// `["config", "set"]`, …
fn command_paths(path: Vec<String>, out: &mut Vec<Vec<String>>) {
    for sub in help_commands(&lokey_help(&path)) {
        let mut deeper = path.clone();
        deeper.push(sub);
        out.push(deeper.clone());
        command_paths(deeper, out);
    }
}

#[test]
fn lokey_1_documents_exactly_the_commands_of_lokey() {
    let page = man("lokey.1");
    let section = page
        .split(".SH COMMANDS")
        .nth(1)
        .unwrap()
        .split(".SH ")
        .next()
        .unwrap();
    let mut entries = section.split(".TP\n");
    // What the section says before its first entry (`--source`) applies to every command.
    let preamble = flags(entries.next().unwrap());
    let entries: Vec<(String, &str)> = entries
        .map(|e| {
            let name = e
                .strip_prefix(".B ")
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or_else(|| panic!("a COMMANDS entry without a name: {e}"));
            (name.to_string(), e)
        })
        .collect();
    let help = help(util::lokey_cmd());
    let listed: BTreeSet<String> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let commands: BTreeSet<String> = entries.iter().map(|(name, _)| name.clone()).collect();
    assert_eq!(commands, listed);

    // Every flag, long and short, of every command and subcommand (`device lock`,
    // `config set`, …) is in that command's entry, and an entry names no flag its command
    // does not have.
    let mut paths = Vec::new();
    command_paths(Vec::new(), &mut paths);
    assert!(paths.contains(&vec!["device".to_string(), "lock".to_string()]));
    assert!(paths.contains(&vec!["config".to_string(), "set".to_string()]));
    for (name, entry) in &entries {
        if name == "help" {
            continue;
        }
        let (doc_long, doc_short) = flags(entry);
        let (mut has_long, mut has_short) = (BTreeSet::new(), BTreeSet::new());
        for path in paths.iter().filter(|p| &p[0] == name) {
            let (long, short) = help_flags(&lokey_help(path));
            let line = path.join(" ");
            for flag in &long {
                assert!(
                    doc_long.contains(flag) || preamble.0.contains(flag),
                    "lokey {line} --{flag} is not in the {name} entry of lokey(1)"
                );
            }
            for flag in &short {
                assert!(
                    doc_short.contains(flag) || preamble.1.contains(flag),
                    "lokey {line} -{flag} is not in the {name} entry of lokey(1)"
                );
            }
            has_long.extend(long);
            has_short.extend(short);
        }
        for flag in &doc_long {
            assert!(
                has_long.contains(flag),
                "lokey(1) gives {name} a flag --{flag} it does not have"
            );
        }
        for flag in &doc_short {
            assert!(
                has_short.contains(flag),
                "lokey(1) gives {name} a flag -{flag} it does not have"
            );
        }
    }

    let options = page
        .split(".SH OPTIONS")
        .nth(1)
        .unwrap()
        .split(".SH ")
        .next()
        .unwrap();
    assert_eq!(
        long_flags(options),
        long_flags(help.split("Options:").nth(1).unwrap())
    );
    // The global short flags too (-h, -V).
    let (_, documented) = flags(options);
    let mut top = BTreeSet::new();
    for line in help.split("Options:").nth(1).unwrap().lines() {
        if let Some(c) = line
            .trim_start()
            .strip_prefix('-')
            .and_then(|r| r.chars().next())
            && c != '-'
        {
            top.insert(c);
        }
    }
    assert_eq!(documented, top);
}

#[test]
fn lokeyd_toml_5_documents_exactly_the_configuration_keys() {
    let page = man("lokeyd.toml.5");
    let documented: BTreeSet<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix(".B "))
        .filter(|l| l.contains('.') && !l.contains(' '))
        .collect();
    let keys: BTreeSet<&str> = lokey::config::FIELDS
        .iter()
        .chain(lokey::config::SOURCE_FIELDS.iter().map(|(f, _)| f))
        .map(|f| f.path)
        .collect();
    assert_eq!(documented, keys);
}
