//! The fault matrix's eyes on a container workload (the counter image
//! `loadshift/counter:test`, run by the real Docker daemon): which of its
//! containers run, and whether the running one's count never went back nor
//! started again from 0. Docker keeps each container's log itself, and a
//! container restored from a checkpoint logs from where the checkpoint froze
//! it, so the log of the one running container is the count to check.

use std::collections::HashMap;

use bollard::query_parameters::{
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use loadshift_executor::runtime::docker::LABEL_WORKLOAD;

/// The image `scripts/setup-docker` builds: a counter, one number every
/// 100 ms.
pub const IMAGE: &str = "loadshift/counter:test";

/// What the matrix remembers of a container workload between faults.
pub struct Probe {
    docker: Docker,
    workload: String,
    /// The container the workload first ran in: only it may count from 0.
    first: Option<String>,
    /// The highest value seen so far: no later count may stay below it.
    last_seen: Option<u64>,
}

impl Probe {
    /// Connects to the local Docker daemon and removes what an earlier,
    /// broken run left of `workload`.
    ///
    /// # Panics
    /// When the daemon does not answer (run scripts/setup-docker).
    pub async fn new(workload: &str) -> Self {
        let docker = Docker::connect_with_local_defaults()
            .expect("a Docker client (run scripts/setup-docker)");
        let docker = docker
            .negotiate_version()
            .await
            .expect("the Docker daemon answers (run scripts/setup-docker)");
        let probe = Self {
            docker,
            workload: workload.to_string(),
            first: None,
            last_seen: None,
        };
        probe.remove_all().await;
        probe
    }

    /// The ids of the workload's containers that run now.
    pub async fn running(&self) -> Vec<String> {
        self.ids(false)
            .await
            .unwrap_or_else(|e| panic!("cannot list containers: {e}"))
    }

    /// The ids of the workload's containers (`all`: stopped ones too).
    async fn ids(&self, all: bool) -> Result<Vec<String>, bollard::errors::Error> {
        let filters =
            HashMap::from([("label", vec![format!("{LABEL_WORKLOAD}={}", self.workload)])]);
        let options = ListContainersOptionsBuilder::default()
            .all(all)
            .filters(&filters)
            .build();
        let list = self.docker.list_containers(Some(options)).await?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Checks the count of running container `id`: `Ok` holds the range
    /// its log shows, `Err` what is wrong (it went back, or started again
    /// from 0).
    pub async fn check_count(&mut self, id: &str) -> Result<String, String> {
        let values = self.log_values(id).await;
        let (Some(&first), Some(&last)) = (values.first(), values.last()) else {
            return Ok("no count logged yet".into());
        };
        if let Some(w) = values.windows(2).find(|w| w[1] != w[0] + 1) {
            return Err(format!("the count jumped from {} to {}", w[0], w[1]));
        }
        let first_container = self.first.get_or_insert_with(|| id.to_string());
        if first == 0 && first_container != id {
            return Err(format!("container {id} counted again from 0"));
        }
        if let Some(seen) = self.last_seen.filter(|seen| last < *seen) {
            return Err(format!("the count went back from {seen} to {last}"));
        }
        self.last_seen = Some(last);
        Ok(format!("count {first}..{last}"))
    }

    /// The numbers in container `id`'s log so far.
    async fn log_values(&self, id: &str) -> Vec<u64> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(false)
            .build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut text = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// Removes every container of the workload, running or not.
    pub async fn remove_all(&self) {
        for id in self.ids(true).await.unwrap_or_default() {
            let force = RemoveContainerOptionsBuilder::default().force(true).build();
            let _ = self.docker.remove_container(&id, Some(force)).await;
        }
    }
}
