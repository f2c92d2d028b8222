//! Commands on a lab node's serial console, for the tests that boot the image.

use scs_edge_lab::LabNode;
use std::time::Duration;

/// Runs `command` on the console and returns its trimmed output, failing on a non-zero status.
pub fn sh(node: &LabNode, command: &str, timeout: Duration) -> String {
    let (status, output) = node
        .console
        .shell(command, timeout)
        .expect("console command");
    assert_eq!(status, 0, "`{command}` failed: {output}");
    output.trim().to_owned()
}
