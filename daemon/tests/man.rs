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

#[test]
fn lokey_1_documents_exactly_the_commands_of_lokey() {
    let page = man("lokey.1");
    let commands: BTreeSet<String> = page
        .split(".SH COMMANDS")
        .nth(1)
        .unwrap()
        .split(".SH ")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix(".B "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
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
    assert_eq!(commands, listed);
    // Every flag of every command is described in COMMANDS.
    let section = page
        .split(".SH COMMANDS")
        .nth(1)
        .unwrap()
        .split(".SH ")
        .next()
        .unwrap();
    let documented = long_flags(section);
    for command in listed.iter().filter(|c| *c != "help") {
        let mut cmd = util::lokey_cmd();
        cmd.arg(command);
        let text = self::help(cmd);
        let flags = long_flags(text.split("Options:").nth(1).unwrap_or(""));
        for flag in flags {
            if ["help", "version", "socket"].contains(&flag.as_str()) {
                continue;
            }
            assert!(
                documented.contains(&flag),
                "lokey {command} --{flag} is not in lokey(1)"
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
}

#[test]
fn lokeyd_toml_5_documents_exactly_the_configuration_keys() {
    let page = man("lokeyd.toml.5");
    let documented: BTreeSet<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix(".B "))
        .filter(|l| l.contains('.') && !l.contains(' '))
        .collect();
    let keys: BTreeSet<&str> = lokey::config::FIELDS.iter().map(|f| f.path).collect();
    assert_eq!(documented, keys);
}
