//! What the writer's tests share: a store with one disk project, and its
//! writes.

use bytes::Bytes;

use crate::domain::{Key, ProjectId, ProjectSettings, Public, StorageMode, Timestamp};
use crate::store::redb_engine::RedbStore;
use crate::store::{Authority, CatalogWrite, Grant, KvOp, KvWrite, ProjectChange, Store};

/// A store in `dir` with the disk project `p`.
pub async fn store_with_project(dir: &std::path::Path) -> (RedbStore, ProjectId) {
    let store = RedbStore::open(dir).unwrap();
    let id = ProjectId::parse("p").unwrap();
    let settings = ProjectSettings {
        id: id.clone(),
        storage: StorageMode::Disk,
        keys_discoverable: true,
        max_value_bytes: 1 << 20,
        max_keys: None,
        public: Public::None,
        created_at: Timestamp::now(),
        created_revision: 0,
    };
    let create = CatalogWrite::CreateProject {
        settings,
        token: None,
    };
    store
        .write_catalog(create, Authority::server())
        .await
        .unwrap();
    (store, id)
}

/// A put of `v` at `key`.
pub fn put(key: &str) -> KvOp {
    KvOp::Put {
        key: Key::parse(key).unwrap(),
        value: Bytes::from_static(b"v"),
        content_type: "text/plain".to_owned(),
        ttl: None,
        precondition: None,
    }
}

/// The write of `ops` to `project`.
pub fn write(project: &ProjectId, ops: Vec<KvOp>) -> KvWrite {
    KvWrite {
        project: project.clone(),
        incarnation: None,
        grant: Grant::Server,
        checks: Vec::new(),
        ops,
    }
}

/// Moves `project`'s keys to `storage`.
pub async fn move_to(store: &RedbStore, project: &ProjectId, storage: StorageMode) {
    let change = ProjectChange {
        storage: Some(storage),
        ..ProjectChange::default()
    };
    let update = CatalogWrite::UpdateProject {
        id: project.clone(),
        change,
    };
    store
        .write_catalog(update, Authority::server())
        .await
        .unwrap();
}
