//! Child processes that cannot outlive their test: each starts in a process group
//! of its own, and its guard kills the whole group (SIGKILL) when dropped, which
//! also happens while a failing test unwinds. Helpers the child started in its
//! group (a sender, a shell pipeline) go with it.

use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

/// A running child process, killed with its process group when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    /// Starts `command` in a new process group.
    pub fn spawn(name: &str, command: &mut Command) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let child = command.process_group(0).spawn()?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    fn child(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("the child is present until dropped")
    }

    /// The child's standard output, when it was piped and not taken yet.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child().stdout.take()
    }

    /// Sends `signal` (such as "TERM") to the child alone.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.id().to_string()])
            .status()
            .expect("kill is on PATH");
        assert!(status.success(), "kill -{signal} {}", self.name);
    }

    /// The exit status if the child has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child().try_wait().expect("waiting on a child")
    }

    /// Waits for the child to end, up to `timeout`; `None` if it is still running.
    pub async fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL to the child's whole process group, then reaps the child.
    pub fn kill(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let group = child.id();
        // The group's id is the child's pid (process_group(0)).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .stderr(std::process::Stdio::null())
            .status();
        let _already_gone = child.kill();
        let _reaped = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Running: present and not a zombie waiting for its parent to reap it.
    fn alive(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    }

    #[test]
    fn dropping_the_guard_kills_the_child_and_what_it_started() {
        let directory = std::env::temp_dir().join(format!("testkit-{}", std::process::id()));
        std::fs::create_dir_all(&directory).expect("mkdir");
        let pid_file = directory.join("grandchild.pid");
        let mut command = Command::new("sh");
        command.args([
            "-c",
            &format!("sleep 300 & echo $! > {}; wait", pid_file.display()),
        ]);
        let guard = ChildGuard::spawn("sh", &mut command).expect("spawn");
        let child = guard.id().to_string();
        let grandchild = loop {
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && !text.trim().is_empty()
            {
                break text.trim().to_owned();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(alive(&child) && alive(&grandchild));
        drop(guard);
        // The grandchild is reaped by init; give it a moment to go.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(&grandchild) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(&child), "the child is gone");
        assert!(!alive(&grandchild), "what it started is gone");
        let _ = std::fs::remove_dir_all(&directory);
    }
}
