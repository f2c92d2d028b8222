//! Running a host program to completion: the one place the agent turns a tool's exit status and
//! stderr into an error an operator can act on.

use std::ffi::OsStr;

/// Runs `program` with `args` (stdin closed) and returns its stdout; a failure to start or a
/// non-zero exit is an error naming the program, its status and its stderr.
pub fn run(program: &str, args: &[&OsStr]) -> Result<String, String> {
    let output = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
