//! Running commands (cargo in the workspace, or any other): fail with the command line in the
//! message, or capture output while echoing it.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use crate::{
    error::{Error, Result},
    layout::root,
};

/// `cargo` (the one running xtask, if known), in the workspace root.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited output; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().map_err(|e| Error(format!("cannot run `{}`: {e}", describe(cmd))))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error(format!("`{}` failed ({status})", describe(cmd))))
    }
}

/// Runs `cmd` and returns its standard output; fails unless it exits 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error(format!("cannot run `{}`: {e}", describe(cmd))))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error(format!("`{}` failed ({})", describe(cmd), out.status)))
    }
}

/// Runs `cmd`, echoing its standard output line by line, and returns the lines and whether it
/// exited 0.
pub fn tee(cmd: &mut Command) -> Result<(Vec<String>, bool)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error(format!("cannot run `{}`: {e}", describe(cmd))))?;
    let mut lines = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(std::result::Result::ok) {
            println!("{line}");
            lines.push(line);
        }
    }
    let status = child.wait().map_err(|e| Error(format!("waiting for `{}`: {e}", describe(cmd))))?;
    Ok((lines, status.success()))
}
