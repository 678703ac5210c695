//! Table helpers that the writer's parts share.

use redb::WriteTransaction;

use super::super::codec::{self, KeyTables, encode, storage_error};
use crate::domain::{ProjectId, StorageMode};
use crate::store::StoreError;

/// The batch's transaction of a database, once begun. A free function over
/// the two fields, so that callers can keep using the batch's other fields
/// while they hold it.
pub fn open_txn<'a>(
    disk: &'a WriteTransaction,
    memory: &'a Option<WriteTransaction>,
    storage: StorageMode,
) -> Result<&'a WriteTransaction, StoreError> {
    match storage {
        StorageMode::Disk => Ok(disk),
        StorageMode::Memory => memory
            .as_ref()
            .ok_or_else(|| StoreError::internal("no memory transaction")),
    }
}

pub(in crate::store::redb_engine) fn put_record<T: codec::Record>(
    txn: &WriteTransaction,
    table: redb::TableDefinition<&str, &[u8]>,
    key: &str,
    record: &T,
) -> Result<(), StoreError> {
    let bytes = encode(redb::TableHandle::name(&table), key, record)?;
    let mut table = txn.open_table(table).map_err(storage_error)?;
    table.insert(key, bytes.as_slice()).map_err(storage_error)?;
    Ok(())
}

pub fn remove_record(
    txn: &WriteTransaction,
    table: redb::TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(table).map_err(storage_error)?;
    table.remove(key).map_err(storage_error)?;
    Ok(())
}

/// Removes a project's key tables and figures from one database.
pub fn drop_key_tables(
    txn: &WriteTransaction,
    tables: &KeyTables,
    id: &ProjectId,
) -> Result<(), StoreError> {
    txn.delete_table(tables.keys()).map_err(storage_error)?;
    txn.delete_table(tables.values()).map_err(storage_error)?;
    txn.delete_table(tables.changes()).map_err(storage_error)?;
    remove_record(txn, codec::HISTORY, id.as_str())?;
    remove_record(txn, codec::SWEEPS, id.as_str())?;
    remove_record(txn, codec::STATS, id.as_str())
}
