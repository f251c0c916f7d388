//! The pieces behind `loadshift up`, one concept each:
//!
//! - [`auth`]: one NATS identity per role and the server configuration
//!   that allows each only what its job needs;
//! - [`cgroup`]: a simulated node's cgroup (v1 or v2): create it with a CPU
//!   quota and a memory limit, empty it, remove it;
//! - [`supervise`]: a service as a child process, restarted with backoff
//!   when it dies, stopped with SIGTERM then SIGKILL;
//! - [`docker`]: whether a Docker daemon answers; [`image`]: the load
//!   generator's container image, built here on first use;
//! - [`usage`]: CPU time and memory of the control plane, read from /proc;
//! - [`scenario`]: what load is put on the nodes once they are up;
//! - [`outcome`]: the live trace run in the simulator's value table;
//! - [`report`]: what is printed on stop (time in overload, lead times);
//! - [`trace_plan`]: which trace VMs the trace scenario runs where, and how.

pub mod auth;
pub mod cgroup;
pub mod docker;
pub mod image;
pub mod outcome;
pub mod report;
pub mod scenario;
pub mod supervise;
pub mod trace_plan;
pub mod usage;
