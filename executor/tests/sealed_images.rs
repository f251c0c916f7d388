//! Checkpoint images through a real nats-server's object store, sealed with
//! the executors' key: what is stored is not the image, and an image altered
//! by one byte, or passed off under another migration's name, is refused
//! before anything of it is unpacked.

use std::io::Read;
use std::path::Path;

use loadshift_events::stream;
use loadshift_executor::checkpoint::{self, CheckpointError};
use loadshift_executor::runtime::TravellingFile;
use loadshift_executor::seal::{self, ImagesKey};
use loadshift_testkit::NatsServer;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

const SECRET: &[u8] = b"password=hunter2 in the workload's memory";

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A dumped workload: an image folder holding a secret, and its stdout.
fn dumped(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<TravellingFile>) {
    let images = dir.join("img");
    let wdir = dir.join("w");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&wdir).unwrap();
    let mut pages = SECRET.repeat(20_000);
    pages.extend(std::iter::repeat_n(7u8, 3 * seal::SEGMENT));
    std::fs::write(images.join("pages-1.img"), pages).unwrap();
    std::fs::write(wdir.join("stdout"), b"1\n2\n").unwrap();
    let files = vec![TravellingFile {
        name: "stdout".into(),
        original_path: wdir.join("stdout"),
    }];
    (images, wdir, files)
}

async fn stored_bytes(
    store: &async_nats::jetstream::object_store::ObjectStore,
    name: &str,
) -> Vec<u8> {
    let mut obj = store.get(name).await.unwrap();
    let mut out = Vec::new();
    obj.read_to_end(&mut out).await.unwrap();
    out
}

/// A real nats-server with the checkpoint store, as executors create it.
async fn checkpoints() -> (
    NatsServer,
    async_nats::jetstream::Context,
    async_nats::jetstream::object_store::ObjectStore,
) {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let store = stream::checkpoint_store(&js, &Default::default())
        .await
        .unwrap();
    (server, js, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_image_hides_the_memory_and_refuses_tampering() {
    seal::install(ImagesKey::from_bytes(&[42; 32]));
    let (_server, js, store) = checkpoints().await;
    let tmp = tempfile::tempdir().unwrap();
    let (images, wdir, files) = dumped(tmp.path());

    let stored = checkpoint::pack_and_upload(&js, "m1", &images, &wdir, &files)
        .await
        .unwrap();
    let bytes = stored_bytes(&store, "m1").await;
    assert_eq!(hex(Sha256::digest(&bytes)), stored.sha256);
    assert!(
        !bytes.windows(SECRET.len()).any(|w| w == SECRET),
        "the stored image holds the workload's memory in clear"
    );

    // Unaltered, it arrives whole.
    let (img2, w2) = (tmp.path().join("img2"), tmp.path().join("w2"));
    let fetched = checkpoint::download_and_unpack(&store, "m1", &stored.sha256, &img2, &w2)
        .await
        .unwrap();
    assert_eq!(fetched.manifest.files, files);
    let mut pages = Vec::new();
    std::fs::File::open(img2.join("pages-1.img"))
        .unwrap()
        .read_to_end(&mut pages)
        .unwrap();
    assert!(pages.starts_with(SECRET));

    // One byte altered by whoever controls the store, with a digest to
    // match (the checkpointed event can be forged too): refused.
    for at in [20, bytes.len() / 2, bytes.len() - 3] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        let name = format!("m1-tampered-{at}");
        store.put(name.as_str(), &mut bad.as_slice()).await.unwrap();
        let sha = hex(Sha256::digest(&bad));
        let (img3, w3) = (tmp.path().join("img3"), tmp.path().join("w3"));
        let err = checkpoint::download_and_unpack(&store, &name, &sha, &img3, &w3)
            .await
            .expect_err("a tampered image was accepted");
        assert!(matches!(err, CheckpointError::Archive { .. }), "{err}");
        assert!(err.to_string().contains("authentication"), "{err}");
        assert!(
            !img3.exists() && !w3.exists(),
            "a tampered image left files"
        );
    }

    // The genuine image under another migration's name: refused.
    store.put("m2", &mut bytes.as_slice()).await.unwrap();
    let (img4, w4) = (tmp.path().join("img4"), tmp.path().join("w4"));
    let err = checkpoint::download_and_unpack(&store, "m2", &stored.sha256, &img4, &w4)
        .await
        .expect_err("an image replayed under another name was accepted");
    assert!(err.to_string().contains("authentication"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_images_are_swept_after_their_ttl_and_fresh_ones_stay() {
    let (_server, _js, store) = checkpoints().await;
    let tmp = tempfile::tempdir().unwrap();
    let journal = loadshift_executor::journal::Journal::open(&tmp.path().join("j")).unwrap();
    let root = tmp.path().join("images");
    let two_hours_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 7200;
    let old = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        two_hours_ago,
        0,
    ))
    .to_string();
    let fresh = uuid::Uuid::now_v7().to_string();
    for name in [&old, &fresh, &"not-ours".to_string()] {
        store.put(name.as_str(), &mut &b"memory"[..]).await.unwrap();
        std::fs::create_dir_all(root.join(name)).unwrap();
    }
    let swept = loadshift_executor::sweep::sweep_once(
        &store,
        &root,
        &journal,
        std::time::Duration::from_secs(3600),
    )
    .await;
    assert_eq!(swept, (1, 1));
    assert!(store.get(&old).await.is_err(), "the orphan is still stored");
    assert!(!root.join(&old).exists());
    for kept in [&fresh, &"not-ours".to_string()] {
        assert!(store.get(kept.as_str()).await.is_ok());
        assert!(root.join(kept).exists());
    }
}
