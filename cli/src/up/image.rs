//! The load generator's container image, built on this machine.
//!
//! No image registry is reachable from these machines, so `--runtime
//! docker` cannot pull anything: on first use it builds
//! `loadshift/loadgen:<hash>` from `loadgen/Dockerfile` (`FROM scratch`)
//! and the `loadshift-loadgen` binary beside `loadshift`, with the shared
//! libraries that binary links. The tag is a hash of the binary and the
//! Dockerfile, so a rebuilt generator gets a new image and an unchanged one
//! is built once. The trace scenario adds its run's profiles on top, as a
//! second image built from the first ([`with_profiles`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Where the generator lives inside the image.
pub const LOADGEN_IN_IMAGE: &str = "/usr/local/bin/loadshift-loadgen";

/// Where the trace scenario's profiles live inside its run's image.
pub const PROFILES_IN_IMAGE: &str = "/trace";

/// The image's repository; the tag is the hash of its inputs.
pub const REPOSITORY: &str = "loadshift/loadgen";

/// Why the image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An input or the build context could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// With which file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A docker or ldd command failed.
    #[error("`{command}` failed: {why}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output, or why it did not run.
        why: String,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io { what, path, source }
}

/// Whether the image was there or had to be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Built {
    /// Already built by an earlier run.
    Found(String),
    /// Built now.
    New(String),
}

impl Built {
    /// The image's name.
    pub fn tag(&self) -> &str {
        match self {
            Self::Found(t) | Self::New(t) => t,
        }
    }
}

/// The image of the generator at `loadgen`, built from `dockerfile` unless
/// the daemon at `docker_host` already has it.
///
/// # Errors
/// The binary or the Dockerfile cannot be read, `ldd` or `docker build`
/// fails.
pub fn loadgen_image(
    loadgen: &Path,
    dockerfile: &Path,
    docker_host: &str,
) -> Result<Built, ImageError> {
    let binary = std::fs::read(loadgen).map_err(io("reading", loadgen))?;
    let recipe = std::fs::read(dockerfile).map_err(io("reading", dockerfile))?;
    let hash = Sha256::new()
        .chain_update(&binary)
        .chain_update(&recipe)
        .finalize();
    let hex: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let tag = format!("{REPOSITORY}:{hex}");
    if docker(
        docker_host,
        &["image", "inspect", "--format", "{{.Id}}", &tag],
    )
    .is_ok()
    {
        return Ok(Built::Found(tag));
    }
    let context =
        std::env::temp_dir().join(format!("loadshift-loadgen-image-{}", std::process::id()));
    let built = stage(loadgen, &context).and_then(|()| {
        let file = context.join("Dockerfile");
        std::fs::copy(dockerfile, &file).map_err(io("copying the Dockerfile to", &file))?;
        build(docker_host, &tag, &context)
    });
    let _ = std::fs::remove_dir_all(&context);
    built.map(|()| Built::New(tag))
}

/// `base` with the files of `dir` under [`PROFILES_IN_IMAGE`], as `tag`:
/// a container sees only its image, and the executor mounts nothing.
///
/// # Errors
/// The Dockerfile cannot be written into `dir`, or `docker build` fails.
pub fn with_profiles(
    base: &str,
    dir: &Path,
    tag: &str,
    docker_host: &str,
) -> Result<(), ImageError> {
    let file = dir.join("Dockerfile");
    let recipe = format!("FROM {base}\nCOPY *.csv {PROFILES_IN_IMAGE}/\n");
    std::fs::write(&file, recipe).map_err(io("writing", &file))?;
    build(docker_host, tag, dir)
}

/// Copies `loadgen` and the libraries it links into `context`/rootfs at
/// the paths they will have in the image.
fn stage(loadgen: &Path, context: &Path) -> Result<(), ImageError> {
    let _ = std::fs::remove_dir_all(context);
    let rootfs = context.join("rootfs");
    let listed = run(Command::new("ldd").arg(loadgen))?;
    let mut files = linked_libraries(&listed);
    files.push(PathBuf::from(LOADGEN_IN_IMAGE));
    for inside in files {
        let from = if inside == Path::new(LOADGEN_IN_IMAGE) {
            loadgen.to_path_buf()
        } else {
            inside.clone()
        };
        let to = rootfs.join(inside.strip_prefix("/").unwrap_or(&inside));
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
        // fs::copy follows symlinks: the image holds the files themselves.
        std::fs::copy(&from, &to).map_err(io("copying into the build context", &from))?;
    }
    Ok(())
}

/// The absolute paths in `ldd`'s output: the libraries and the dynamic
/// loader (`linux-vdso.so.1` has none: the kernel maps it).
pub fn linked_libraries(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|l| l.split_whitespace().find(|t| t.starts_with('/')))
        .map(PathBuf::from)
        .collect()
}

/// `docker build -t tag context` with the classic builder.
fn build(docker_host: &str, tag: &str, context: &Path) -> Result<(), ImageError> {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_HOST", docker_host)
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--quiet", "--tag", tag])
        .arg(context);
    run(&mut cmd).map(|_| ())
}

/// `docker ARGS` against `docker_host`; its stdout.
fn docker(docker_host: &str, args: &[&str]) -> Result<String, ImageError> {
    run(Command::new("docker")
        .env("DOCKER_HOST", docker_host)
        .args(args))
}

/// Runs `cmd`; its stdout, or its stderr as the error.
fn run(cmd: &mut Command) -> Result<String, ImageError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| ImageError::Command {
        command: line.clone(),
        why: e.to_string(),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(ImageError::Command {
            command: line,
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Removes every container of `workloads` (by the executor's workload
/// label), stopped or not: what `up --runtime docker` leaves nothing of.
/// Returns how many were removed.
///
/// # Errors
/// The daemon cannot be asked.
pub fn remove_containers(docker_host: &str, workloads: &[String]) -> Result<usize, ImageError> {
    let mut removed = 0;
    for w in workloads {
        let filter = format!("label=org.loadshift.workload={w}");
        let ids = docker(
            docker_host,
            &["ps", "--all", "--quiet", "--filter", &filter],
        )?;
        for id in ids.split_whitespace() {
            docker(docker_host, &["rm", "--force", "--volumes", id])?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes `images` (a run's own); one already gone is fine.
///
/// # Errors
/// The daemon refuses for another reason (a container still uses one).
pub fn remove_images(docker_host: &str, images: &[String]) -> Result<(), ImageError> {
    for i in images {
        match docker(docker_host, &["image", "rm", i]) {
            Err(ImageError::Command { why, .. }) if why.contains("No such image") => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_the_libraries_and_the_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            linked_libraries(out),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(linked_libraries("\tstatically linked\n").is_empty());
    }

    #[test]
    fn a_missing_binary_is_a_clear_error_before_docker_is_asked() {
        let e = loadgen_image(
            Path::new("/nonexistent/loadshift-loadgen"),
            Path::new("/nonexistent/Dockerfile"),
            "unix:///nonexistent.sock",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("reading /nonexistent/loadshift-loadgen"),
            "{e}"
        );
    }
}
