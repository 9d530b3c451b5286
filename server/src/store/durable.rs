//! Group commit for sled: a caller whose writes must be on disk before it answers waits for
//! one flush that started after its write. While a flush runs, later callers queue behind it
//! and share the next one, so a thousand proxies reporting each second cost a handful of
//! fsyncs, not a thousand.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;

#[derive(Debug)]
pub struct Durable {
    db: sled::Db,
    /// Tickets handed out: one per caller, taken after its write.
    written: AtomicU64,
    /// The highest ticket a completed flush covers.
    done: AtomicU64,
    /// Held while flushing; waiters queue on it in order.
    flushing: Mutex<()>,
}

impl Durable {
    pub fn new(db: sled::Db) -> Durable {
        Durable {
            db,
            written: AtomicU64::new(0),
            done: AtomicU64::new(0),
            flushing: Mutex::new(()),
        }
    }

    /// Returns once everything written before the call is on disk.
    pub async fn sync(&self) -> sled::Result<()> {
        let ticket = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        if self.done.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let _flushing = self.flushing.lock().await;
        // The flush we queued behind may have covered us.
        if self.done.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Every ticket up to here belongs to a write that finished before this flush.
        let upto = self.written.load(Ordering::SeqCst);
        self.db.flush_async().await?;
        self.done.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_all_return_after_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let durable = Arc::new(Durable::new(db.clone()));
        let mut tasks = Vec::new();
        for i in 0..64u32 {
            let (db, durable) = (db.clone(), durable.clone());
            tasks.push(tokio::spawn(async move {
                db.insert(i.to_be_bytes(), &[1]).unwrap();
                durable.sync().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(durable.done.load(Ordering::SeqCst), 64);
        drop(db);
        drop(durable);
        let reopened =
            crate::store::when_free(|| super::super::sled::open_sled(dir.path())).unwrap();
        assert_eq!(reopened.len(), 64);
    }
}
