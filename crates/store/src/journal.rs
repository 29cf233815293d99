//! The transaction journal: transactions the node accepted but has not committed, written
//! durably before the node acknowledges them, and the most recent drops.
//!
//! Appends from concurrent callers are grouped: the first caller to find no write in flight
//! writes everything queued so far in one redb write transaction (one fsync), and every caller
//! whose entries it carried returns when it is durable. So a burst of single submissions costs
//! a few commits, not one each.

use crate::{
    DroppedTx, Store, StoreError, DROPPED, DROPPED_ORDER, DROPPED_REMEMBERED_MAX,
    DROP_REASON_BYTES_MAX, PENDING_TXS,
};
use piazza_codec::{Decode, Reader, Writer};
use piazza_primitives::Hash;
use redb::{ReadableTable, ReadableTableMetadata};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

type Outcome = Arc<OnceLock<Result<(), String>>>;

struct Queued {
    entries: Vec<(Hash, Vec<u8>)>,
    outcome: Outcome,
}

#[derive(Default)]
struct Queue {
    /// Callers waiting for a writer; at most one entry per blocked caller.
    waiting: Vec<Queued>,
    writing: bool,
}

#[derive(Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
    written: Condvar,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store {
    /// Writes `(hash, signed transaction bytes)` entries to the journal and returns once they
    /// are durable (committed with fsync), grouped with concurrent callers' entries.
    pub fn journal_append(&self, entries: Vec<(Hash, Vec<u8>)>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let outcome: Outcome = Arc::new(OnceLock::new());
        let group = &self.journal;
        let mut queue = group.lock();
        queue.waiting.push(Queued {
            entries,
            outcome: outcome.clone(),
        });
        loop {
            if let Some(result) = outcome.get() {
                return result.clone().map_err(StoreError::Journal);
            }
            if queue.writing {
                queue = group.written.wait(queue).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            queue.writing = true;
            let batch = std::mem::take(&mut queue.waiting);
            drop(queue);
            let result = self.write_pending(&batch).map_err(|e| e.to_string());
            for queued in &batch {
                let _ = queued.outcome.set(result.clone());
            }
            queue = group.lock();
            queue.writing = false;
            group.written.notify_all();
        }
    }

    fn write_pending(&self, batch: &[Queued]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut pending = txn.open_table(PENDING_TXS)?;
            for (hash, bytes) in batch.iter().flat_map(|q| &q.entries) {
                pending.insert(hash.0.as_slice(), bytes.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Every journaled transaction, by hash. The journal holds only what the node's pool held
    /// (entries leave it when committed or dropped), so it is bounded by the pool's bounds.
    pub fn journal_entries(&self) -> Result<Vec<(Hash, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PENDING_TXS)?;
        let mut out = Vec::with_capacity(table.len()? as usize);
        for entry in table.iter()? {
            let (key, value) = entry?;
            let hash = Hash::from_bytes(key.value()).map_err(crate::corrupt("journal key"))?;
            out.push((hash, value.value().to_vec()));
        }
        Ok(out)
    }

    /// Removes `forget` from the journal and records `dropped` (also removed from the journal),
    /// in one durable write. Beyond [`DROPPED_REMEMBERED_MAX`] drops the oldest are forgotten.
    pub fn journal_forget(&self, forget: &[Hash], dropped: &[DroppedTx]) -> Result<(), StoreError> {
        if forget.is_empty() && dropped.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut pending = txn.open_table(PENDING_TXS)?;
            for hash in forget.iter().chain(dropped.iter().map(|d| &d.hash)) {
                pending.remove(hash.0.as_slice())?;
            }
            let mut records = txn.open_table(DROPPED)?;
            let mut order = txn.open_table(DROPPED_ORDER)?;
            let first = order.last()?.map_or(0, |(k, _)| k.value() + 1);
            for (sequence, drop) in (first..).zip(dropped) {
                let mut w = Writer::new();
                w.u64(sequence);
                w.u32(drop.code);
                w.str(truncate(&drop.reason, DROP_REASON_BYTES_MAX));
                let previous = records.insert(drop.hash.0.as_slice(), w.into_bytes().as_slice())?;
                if let Some(previous) = previous {
                    // Dropped again (re-sent after a drop): keep one order entry.
                    let old = Reader::new(previous.value()).u64().ok();
                    drop_order_entry(&mut order, old)?;
                }
                order.insert(sequence, drop.hash.0.as_slice())?;
            }
            while order.len()? > DROPPED_REMEMBERED_MAX as u64 {
                let Some((_, hash)) = order.pop_first()? else {
                    break;
                };
                records.remove(hash.value())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The recorded drop of `hash`, if it is among the most recent [`DROPPED_REMEMBERED_MAX`].
    pub fn dropped(&self, hash: &Hash) -> Result<Option<DroppedTx>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DROPPED)?;
        let Some(value) = table.get(hash.0.as_slice())? else {
            return Ok(None);
        };
        let mut r = Reader::new(value.value());
        let decode = |r: &mut Reader<'_>| -> Result<DroppedTx, piazza_codec::DecodeError> {
            r.u64()?;
            let code = r.u32()?;
            let reason = r.string(DROP_REASON_BYTES_MAX)?;
            r.finish()?;
            Ok(DroppedTx {
                hash: *hash,
                code,
                reason,
            })
        };
        decode(&mut r)
            .map(Some)
            .map_err(crate::corrupt("dropped transaction"))
    }

    /// Number of journaled transactions.
    pub fn journal_len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(PENDING_TXS)?.len()?)
    }
}

fn drop_order_entry(
    order: &mut redb::Table<'_, u64, &'static [u8]>,
    sequence: Option<u64>,
) -> Result<(), StoreError> {
    if let Some(sequence) = sequence {
        order.remove(sequence)?;
    }
    Ok(())
}

fn truncate(text: &str, bytes_max: usize) -> &str {
    if text.len() <= bytes_max {
        return text;
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
