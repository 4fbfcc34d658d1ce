//! The redb backend of the store (the only user of redb besides `tables.rs`).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableHandle, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use super::tables::*;
use super::{
    AuditEntry, DeadLetter, Enqueued, EventRecord, FailedEvent, NewEvent, PushState, SkuPicture, StockChange, StockRow, StoreError,
    WaitlistEntry, WritebackJob,
};
use crate::connector::credentials::{StoredToken, TokenStore};
use crate::model::Incoming;
use crate::model::{OrderRecord, OrderStatus, WritebackState};

/// Most jobs folded into one transaction.
const MAX_BATCH: usize = 512;

type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;
type Job = Box<dyn FnOnce(&mut WriteTx<'_>) -> Completion + Send>;

/// How long a write whose caller is in no hurry (see [`Store::write_unhurried`])
/// waits for company before it is committed on its own.
const UNHURRIED_WAIT: Duration = Duration::from_millis(2);

enum Msg {
    Job(Job),
    /// Committed with the next `Job`, or after [`UNHURRIED_WAIT`].
    Unhurried(Job),
    Stop(oneshot::Sender<()>),
}

/// Handle to the state file. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    jobs: mpsc::Sender<Msg>,
    /// The writer thread, woken after each send in case it is waiting for
    /// company for unhurried writes (a wake-up of a thread not parked costs
    /// an atomic swap).
    writer: std::thread::Thread,
}

fn storage<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Storage(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

/// An order as it stands. Finishing a write-back removes its job from the
/// outbox and leaves the record as its decision wrote it (a small row
/// deleted instead of the whole record encoded and written again), so a
/// record saying `Pending` whose job is gone is done.
fn settled(mut rec: OrderRecord, job_open: impl FnOnce(&str) -> Result<bool, StoreError>) -> Result<OrderRecord, StoreError> {
    if rec.writeback == WritebackState::Pending && !job_open(&rec.order.id)? {
        rec.writeback = WritebackState::Done;
    }
    Ok(rec)
}

fn job_open(outbox: &impl ReadableTable<&'static str, &'static [u8]>, order_id: &str) -> Result<bool, StoreError> {
    Ok(outbox.get(order_id).map_err(storage)?.is_some())
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { what: what.to_string(), message: e.to_string() })
}

/// redb's page cache. Its default (1 GiB) lets a backlog of queued webhooks
/// grow the daemon to that size; the hot pages (the queue's head, recent
/// orders, the ledger) fit in far less.
const PAGE_CACHE_BYTES: usize = 64 << 20;

impl Store {
    /// Open (or create) the state file and start the writer thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |message: String| StoreError::Open { path: path.display().to_string(), message };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| open_err(format!("cannot create its directory: {e}")))?;
        }
        let db = redb::Builder::new().set_cache_size(PAGE_CACHE_BYTES).create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => open_err("another ordersync process is using it".into()),
            other => open_err(other.to_string()),
        })?;
        // Orders, customers and OAuth tokens live here: owner only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| open_err(format!("cannot restrict its permissions: {e}")))?;
        }
        // Create every table up front so readers never meet a missing one.
        // Not flushed on its own: all of it is redone if lost, and the first
        // durable commit (the first webhook's) takes it along. Opening the
        // file has already waited for one fsync, and while the disk is busy
        // with other writes each fsync before ready can take a long time.
        let mut txn = db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::None).map_err(storage)?;
        {
            txn.open_table(META).map_err(storage)?;
            txn.open_table(EVENTS).map_err(storage)?;
            txn.open_table(DELIVERIES).map_err(storage)?;
            txn.open_table(DELIVERY_IDS).map_err(storage)?;
            txn.open_table(ORDERS).map_err(storage)?;
            txn.open_table(PAYLOADS).map_err(storage)?;
            txn.open_table(AUDIT).map_err(storage)?;
            txn.open_table(STOCK).map_err(storage)?;
            txn.open_table(RESERVATIONS).map_err(storage)?;
            txn.open_table(RESERVED).map_err(storage)?;
            txn.open_table(OUTBOX).map_err(storage)?;
            txn.open_table(DEAD_LETTERS).map_err(storage)?;
            txn.open_table(FAILED_EVENTS).map_err(storage)?;
            txn.open_table(STOCK_HISTORY).map_err(storage)?;
            txn.open_table(STOCK_JOURNAL).map_err(storage)?;
            txn.open_table(INCOMING).map_err(storage)?;
            txn.open_table(WAITLIST).map_err(storage)?;
            txn.open_table(PUSHES).map_err(storage)?;
            txn.open_table(CURSORS).map_err(storage)?;
            txn.open_table(AUTH_TOKENS).map_err(storage)?;
            seed_stock_change_counter(&txn)?;
            rekey_reservations_by_order(&txn)?;
        }
        txn.commit().map_err(storage)?;

        let db = Arc::new(db);
        let (jobs, rx) = mpsc::channel(4096);
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("ordersync-store".into())
            .spawn(move || {
                // Without its writer the daemon could only refuse work: end the
                // process instead, so its supervisor starts it again.
                let stop = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer_loop(&writer_db, rx))).unwrap_or_else(|_| {
                    tracing::error!("the store's writer thread failed; stopping");
                    std::process::abort()
                });
                // Release the file before saying we are done, so it can be reopened at once.
                drop(writer_db);
                if let Some(s) = stop {
                    let _ = s.send(());
                }
            })
            .map_err(|e| open_err(e.to_string()))?
            .thread()
            .clone();
        Ok(Store { inner: Arc::new(Inner { db, jobs, writer }) })
    }

    /// Run `f` inside the next group-committed write transaction. Resolves once
    /// the transaction is durable (or failed).
    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.send(f, Msg::Job).await
    }

    /// [`Store::write`] for a write nothing else waits on (closing a finished
    /// write-back): it rides along with the next write someone is waiting
    /// for, or is committed on its own after a couple of milliseconds. At a
    /// low rate, where every commit would otherwise carry a single write,
    /// that spares a commit and its fsync per order.
    pub async fn write_unhurried<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.send(f, Msg::Unhurried).await
    }

    async fn send<R, F>(&self, f: F, msg: fn(Job) -> Msg) -> Result<R, StoreError>
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |w| {
            let result = f(w);
            Box::new(move |commit: Option<&StoreError>| {
                let out = match (result, commit) {
                    (Ok(_), Some(e)) => Err(e.clone()),
                    (r, _) => r,
                };
                let _ = tx.send(out);
            })
        });
        self.inner.jobs.send(msg(job)).await.map_err(|_| StoreError::Closed)?;
        self.inner.writer.unpark();
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Finish queued writes and stop the writer.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.jobs.send(Msg::Stop(tx)).await.is_ok() {
            self.inner.writer.unpark();
            let _ = rx.await;
        }
    }

    fn read<R>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let txn = self.inner.db.begin_read().map_err(storage)?;
        f(&txn)
    }

    pub fn order(&self, id: &str) -> Result<Option<OrderRecord>, StoreError> {
        self.read(|t| {
            let table = t.open_table(ORDERS).map_err(storage)?;
            let Some(stored) = table.get(id).map_err(storage)? else { return Ok(None) };
            settled(decode("order", stored.value())?, |id| job_open(&t.open_table(OUTBOX).map_err(storage)?, id)).map(Some)
        })
    }

    /// Orders, optionally of one status, in id order; at most `limit`.
    pub fn orders(&self, status: Option<OrderStatus>, limit: usize) -> Result<Vec<OrderRecord>, StoreError> {
        self.read(|t| {
            let table = t.open_table(ORDERS).map_err(storage)?;
            let outbox = t.open_table(OUTBOX).map_err(storage)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(storage)? {
                let (_, v) = row.map_err(storage)?;
                let rec = settled(decode("order", v.value())?, |id| job_open(&outbox, id))?;
                if status.is_none_or(|s| s == rec.status) {
                    out.push(rec);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    pub fn order_count(&self) -> Result<u64, StoreError> {
        self.read(|t| t.open_table(ORDERS).map_err(storage)?.len().map_err(storage))
    }

    pub fn payload(&self, order_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|t| Ok(t.open_table(PAYLOADS).map_err(storage)?.get(order_id).map_err(storage)?.map(|v| v.value().to_vec())))
    }

    pub fn audit(&self, order_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(|t| {
            let table = t.open_table(AUDIT).map_err(storage)?;
            let mut out = Vec::new();
            for row in table.range((order_id, 0)..=(order_id, u64::MAX)).map_err(storage)? {
                let (_, v) = row.map_err(storage)?;
                let bytes = v.value();
                if bytes.trim_ascii_start().starts_with(b"[") {
                    out.extend(decode::<Vec<AuditEntry>>("audit entries", bytes)?);
                } else {
                    out.push(decode("audit entry", bytes)?);
                }
            }
            Ok(out)
        })
    }

    pub fn event(&self, id: u64) -> Result<Option<EventRecord>, StoreError> {
        self.read(|t| t.open_table(EVENTS).map_err(storage)?.get(id).map_err(storage)?.map(|v| decode("event", v.value())).transpose())
    }

    /// Ids of every queued event, oldest first.
    pub fn pending_events(&self) -> Result<Vec<u64>, StoreError> {
        self.read(|t| {
            let table = t.open_table(EVENTS).map_err(storage)?;
            table.iter().map_err(storage)?.map(|r| r.map(|(k, _)| k.value()).map_err(storage)).collect()
        })
    }

    pub fn queue_depth(&self) -> Result<u64, StoreError> {
        self.read(|t| t.open_table(EVENTS).map_err(storage)?.len().map_err(storage))
    }

    pub fn writebacks(&self) -> Result<Vec<WritebackJob>, StoreError> {
        self.read(|t| {
            let table = t.open_table(OUTBOX).map_err(storage)?;
            table.iter().map_err(storage)?.map(|r| r.map_err(storage).and_then(|(_, v)| decode("write-back job", v.value()))).collect()
        })
    }

    pub fn writeback(&self, order_id: &str) -> Result<Option<WritebackJob>, StoreError> {
        self.read(|t| {
            t.open_table(OUTBOX).map_err(storage)?.get(order_id).map_err(storage)?.map(|v| decode("write-back job", v.value())).transpose()
        })
    }

    pub fn stock(&self, sku: &str) -> Result<Vec<(String, StockRow)>, StoreError> {
        self.read(|t| stock_rows(&t.open_table(STOCK).map_err(storage)?, sku))
    }

    pub fn reserved_total(&self, sku: &str) -> Result<i64, StoreError> {
        self.read(|t| Ok(reserved_shares(&t.open_table(RESERVED).map_err(storage)?, sku, None)?.0))
    }

    /// A SKU's rows, reservations and incoming stock in one read
    /// transaction; `connection` picks whose reservations `reserved_by_connection` counts.
    pub fn sku_picture(&self, sku: &str, connection: Option<&str>) -> Result<SkuPicture, StoreError> {
        Ok(self.sku_pictures(&[sku], connection)?.pop().expect("one picture per SKU"))
    }

    /// [`Store::sku_picture`] of several SKUs, all of one instant.
    pub fn sku_pictures(&self, skus: &[&str], connection: Option<&str>) -> Result<Vec<SkuPicture>, StoreError> {
        self.read(|t| {
            let stock = t.open_table(STOCK).map_err(storage)?;
            let reserved = t.open_table(RESERVED).map_err(storage)?;
            let incoming = t.open_table(INCOMING).map_err(storage)?;
            let picture = |sku: &str| {
                let rows = stock_rows(&stock, sku)?;
                let (reserved, reserved_by_connection) = reserved_shares(&reserved, sku, connection)?;
                let incoming = incoming.get(sku).map_err(storage)?.map(|v| decode("incoming", v.value()));
                Ok(SkuPicture { rows, reserved, reserved_by_connection, incoming: incoming.transpose()?.unwrap_or_default() })
            };
            skus.iter().map(|sku| picture(sku)).collect()
        })
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(|t| {
            let table = t.open_table(DEAD_LETTERS).map_err(storage)?;
            table.iter().map_err(storage)?.map(|r| r.map_err(storage).and_then(|(_, v)| decode("dead letter", v.value()))).collect()
        })
    }

    /// Every SKU the ledger knows, with its rows (reported stock).
    pub fn stock_all(&self) -> Result<Vec<(String, String, StockRow)>, StoreError> {
        self.read(|t| {
            let table = t.open_table(STOCK).map_err(storage)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                let (sku, loc) = k.value();
                out.push((sku.to_string(), loc.to_string(), decode("stock row", v.value())?));
            }
            Ok(out)
        })
    }

    /// SKUs with reservations, and their totals.
    pub fn reserved_all(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|t| {
            let table = t.open_table(RESERVED).map_err(storage)?;
            let mut out: Vec<(String, i64)> = Vec::new();
            for row in table.iter().map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                let (sku, _) = k.value();
                match out.last_mut() {
                    Some((last, total)) if last == sku => *total += v.value(),
                    _ => out.push((sku.to_string(), v.value())),
                }
            }
            Ok(out)
        })
    }

    /// Reservations of one SKU: (order id, units). Reservations are kept by
    /// order, so this reads every open one: for the admin API, not for the
    /// order path.
    pub fn reservations(&self, sku: &str) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|t| {
            let table = t.open_table(RESERVATIONS).map_err(storage)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                let (order, s) = k.value();
                if s == sku {
                    out.push((order.to_string(), v.value()));
                }
            }
            Ok(out)
        })
    }

    pub fn incoming(&self, sku: &str) -> Result<Vec<Incoming>, StoreError> {
        self.read(|t| {
            t.open_table(INCOMING)
                .map_err(storage)?
                .get(sku)
                .map_err(storage)?
                .map(|v| decode("incoming", v.value()))
                .transpose()
                .map(Option::unwrap_or_default)
        })
    }

    /// A SKU's stock history, oldest first; at most `limit` of the newest.
    pub fn stock_history(&self, sku: &str, limit: usize) -> Result<Vec<StockChange>, StoreError> {
        self.read(|t| {
            // The journal holds the newest changes (every filed one is older).
            let journal = t.open_table(STOCK_JOURNAL).map_err(storage)?;
            let table = t.open_table(STOCK_HISTORY).map_err(storage)?;
            let mut out = Vec::new();
            for row in journal.iter().map_err(storage)?.rev() {
                if out.len() == limit {
                    break;
                }
                let (k, v) = row.map_err(storage)?;
                if k.value().1 == sku {
                    out.push(decode("stock change", v.value())?);
                }
            }
            for row in table.range((sku, 0)..=(sku, u64::MAX)).map_err(storage)?.rev().take(limit - out.len()) {
                let (_, v) = row.map_err(storage)?;
                out.push(decode("stock change", v.value())?);
            }
            out.reverse();
            Ok(out)
        })
    }

    /// The waitlist of one SKU in service order, or of every SKU.
    pub fn waitlist(&self, sku: Option<&str>) -> Result<Vec<WaitlistEntry>, StoreError> {
        self.read(|t| {
            let table = t.open_table(WAITLIST).map_err(storage)?;
            let rows: Box<dyn Iterator<Item = _>> = match sku {
                Some(s) => Box::new(table.range((s, 0, 0, "")..).map_err(storage)?),
                None => Box::new(table.iter().map_err(storage)?),
            };
            let mut out = Vec::new();
            for row in rows {
                let (k, _) = row.map_err(storage)?;
                let (s, inv, arrival, order) = k.value();
                if sku.is_some_and(|want| want != s) {
                    break;
                }
                out.push(WaitlistEntry {
                    sku: s.to_string(),
                    priority: (i64::MAX as i128 - inv as i128) as i64,
                    arrival,
                    order_id: order.to_string(),
                });
            }
            Ok(out)
        })
    }

    pub fn pushes(&self) -> Result<Vec<PushState>, StoreError> {
        self.read(|t| {
            let table = t.open_table(PUSHES).map_err(storage)?;
            table.iter().map_err(storage)?.map(|r| r.map_err(storage).and_then(|(_, v)| decode("push", v.value()))).collect()
        })
    }

    pub fn cursor(&self, workflow: &str) -> Result<Option<String>, StoreError> {
        self.read(|t| Ok(t.open_table(CURSORS).map_err(storage)?.get(workflow).map_err(storage)?.map(|v| v.value().to_string())))
    }

    pub fn auth_token(&self, connection: &str) -> Result<Option<StoredToken>, StoreError> {
        self.read(|t| {
            t.open_table(AUTH_TOKENS)
                .map_err(storage)?
                .get(connection)
                .map_err(storage)?
                .map(|v| decode("auth token", v.value()))
                .transpose()
        })
    }

    pub fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        self.read(|t| {
            t.open_table(DEAD_LETTERS).map_err(storage)?.get(id).map_err(storage)?.map(|v| decode("dead letter", v.value())).transpose()
        })
    }

    pub fn failed_events(&self) -> Result<Vec<FailedEvent>, StoreError> {
        self.read(|t| {
            let table = t.open_table(FAILED_EVENTS).map_err(storage)?;
            table.iter().map_err(storage)?.map(|r| r.map_err(storage).and_then(|(_, v)| decode("failed event", v.value()))).collect()
        })
    }
}

fn stock_rows(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    sku: &str,
) -> Result<Vec<(String, StockRow)>, StoreError> {
    let mut out = Vec::new();
    for row in table.range((sku, "")..).map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let (s, loc) = k.value();
        if s != sku {
            break;
        }
        out.push((loc.to_string(), decode("stock row", v.value())?));
    }
    Ok(out)
}

/// A SKU's reserved units over every connection, and those of `connection`
/// among them (0 when none is asked for): one row per connection holding any.
fn reserved_shares(
    table: &impl ReadableTable<(&'static str, &'static str), i64>,
    sku: &str,
    connection: Option<&str>,
) -> Result<(i64, i64), StoreError> {
    let (mut total, mut mine) = (0, 0);
    for row in table.range((sku, "")..).map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let (s, held_by) = k.value();
        if s != sku {
            break;
        }
        total += v.value();
        if connection == Some(held_by) {
            mine = v.value();
        }
    }
    Ok((total, mine))
}

fn writer_loop(db: &Database, mut rx: mpsc::Receiver<Msg>) -> Option<oneshot::Sender<()>> {
    let commit = |jobs: Vec<Job>| {
        if !jobs.is_empty() && run_batch(db, jobs) >= STOCK_JOURNAL_FOLD_AT {
            fold_stock_journal(db);
        }
    };
    // Unhurried writes waiting for company, and since when.
    let mut waiting: Vec<Job> = Vec::new();
    let mut waiting_since = Instant::now();
    loop {
        let next = if waiting.is_empty() {
            rx.blocking_recv()
        } else {
            // Senders unpark this thread after each send.
            let until = waiting_since + UNHURRIED_WAIT;
            loop {
                match rx.try_recv() {
                    Ok(msg) => break Some(msg),
                    Err(mpsc::error::TryRecvError::Disconnected) => break None,
                    Err(mpsc::error::TryRecvError::Empty) => match until.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => std::thread::park_timeout(left),
                        _ => {
                            // Their wait is over: commit them alone, then wait as usual.
                            commit(std::mem::take(&mut waiting));
                            break rx.blocking_recv();
                        }
                    },
                }
            }
        };
        let mut jobs = std::mem::take(&mut waiting);
        let (mut hurried, mut stop) = (false, None);
        let mut take = |msg: Msg, jobs: &mut Vec<Job>, stop: &mut Option<oneshot::Sender<()>>| match msg {
            Msg::Job(j) => {
                jobs.push(j);
                hurried = true;
            }
            Msg::Unhurried(j) => {
                if jobs.is_empty() {
                    waiting_since = Instant::now();
                }
                jobs.push(j);
            }
            Msg::Stop(s) => *stop = Some(s),
        };
        match next {
            Some(msg) => take(msg, &mut jobs, &mut stop),
            None => {
                commit(jobs);
                return None;
            }
        }
        while stop.is_none() && jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(msg) => take(msg, &mut jobs, &mut stop),
                Err(_) => break,
            }
        }
        if !hurried && stop.is_none() && jobs.len() < MAX_BATCH {
            waiting = jobs;
            continue;
        }
        commit(jobs);
        if stop.is_some() {
            return stop;
        }
    }
}

/// Run the jobs in one durable transaction; gives the length of the stock
/// journal after it (0 when the batch did not touch it).
fn run_batch(db: &Database, jobs: Vec<Job>) -> u64 {
    let mut txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => {
            let err = storage(e);
            for job in jobs {
                // The job never ran; tell its caller why.
                fail_unrun(job, &err);
            }
            return 0;
        }
    };
    let _ = txn.set_durability(Durability::Immediate);
    let mut completions = Vec::with_capacity(jobs.len());
    let (failed, journalled) = {
        let mut w = WriteTx { txn: &txn, tables: OpenTables::default(), failed: None, unfiled_delivery_ids: None };
        for job in jobs {
            completions.push(job(&mut w));
            if w.failed.is_some() {
                break;
            }
        }
        let journalled = w.tables.stock_journal.as_ref().and_then(|t| t.len().ok()).unwrap_or(0);
        (w.failed, journalled)
    };
    let result = match failed {
        Some(e) => {
            let _ = txn.abort();
            Some(e)
        }
        None => txn.commit().err().map(storage),
    };
    crate::telemetry::metrics::METRICS.store_commit(completions.len());
    let ok = result.is_none();
    for c in completions {
        c(result.as_ref());
    }
    if ok { journalled } else { 0 }
}

/// File the journalled stock changes under their SKUs, in one transaction of
/// their own: sorted, they rewrite each SKU's newest history page once for
/// the lot. On failure they stay journalled (readers see them there) and
/// the next batch that journals a change tries again.
fn fold_stock_journal(db: &Database) {
    let fold = || -> Result<usize, StoreError> {
        let txn = db.begin_write().map_err(storage)?;
        let moved = {
            let mut journal = txn.open_table(STOCK_JOURNAL).map_err(storage)?;
            let mut entries = Vec::new();
            for row in journal.extract_if(|_, _| true).map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                let (seq, sku) = k.value();
                entries.push((sku.to_string(), seq, v.value().to_vec()));
            }
            entries.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            let mut history = txn.open_table(STOCK_HISTORY).map_err(storage)?;
            for (sku, seq, change) in &entries {
                history.insert((sku.as_str(), *seq), change.as_slice()).map_err(storage)?;
            }
            entries.len()
        };
        txn.commit().map_err(storage)?;
        Ok(moved)
    };
    match fold() {
        Ok(moved) => tracing::debug!(moved, "stock journal filed into the history"),
        Err(e) => tracing::error!("stock journal not filed (it stays readable and is retried): {e}"),
    }
}

/// Stock changes are numbered by one counter for all SKUs. A state file from
/// before the journal numbered each SKU's changes from 1: start past the
/// highest, so every SKU's history stays in order.
fn seed_stock_change_counter(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(storage)?;
    if meta.get(NEXT_STOCK_CHANGE).map_err(storage)?.is_some() {
        return Ok(());
    }
    let history = txn.open_table(STOCK_HISTORY).map_err(storage)?;
    let mut highest = 0;
    for row in history.iter().map_err(storage)? {
        highest = highest.max(row.map_err(storage)?.0.value().1);
    }
    meta.insert(NEXT_STOCK_CHANGE, highest + 1).map_err(storage)?;
    Ok(())
}

/// A state file from before reservations were kept by order: move its
/// (sku, order) rows into today's tables, count each connection's share of
/// every SKU afresh from them, and drop the old tables (once, on open).
fn rekey_reservations_by_order(txn: &WriteTransaction) -> Result<(), StoreError> {
    let tables: Vec<String> = txn.list_tables().map_err(storage)?.map(|t| t.name().to_string()).collect();
    let exists = |name: &str| tables.iter().any(|t| t == name);
    if exists(RESERVATIONS_BY_SKU.name()) {
        let old = txn.open_table(RESERVATIONS_BY_SKU).map_err(storage)?;
        let mut by_order = txn.open_table(RESERVATIONS).map_err(storage)?;
        let mut held: std::collections::BTreeMap<(String, String), i64> = Default::default();
        for row in old.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            let (sku, order) = k.value();
            by_order.insert((order, sku), v.value()).map_err(storage)?;
            *held.entry((sku.to_string(), connection_of(order).to_string())).or_default() += v.value();
        }
        let mut reserved = txn.open_table(RESERVED).map_err(storage)?;
        for ((sku, connection), qty) in held.iter().filter(|(_, qty)| **qty > 0) {
            reserved.insert((sku.as_str(), connection.as_str()), qty).map_err(storage)?;
        }
        drop(old);
        txn.delete_table(RESERVATIONS_BY_SKU).map_err(storage)?;
    }
    if exists(RESERVED_TOTALS_BY_SKU.name()) {
        txn.delete_table(RESERVED_TOTALS_BY_SKU).map_err(storage)?;
    }
    Ok(())
}

fn fail_unrun(job: Job, err: &StoreError) {
    // Running the job against nothing is not possible; drop it so its caller
    // sees the store as closed, and log the cause.
    drop(job);
    tracing::error!("{err}");
}

/// Declares the handles a batch keeps open: each table is opened the first
/// time a job of the batch touches it and stays open until the commit, so
/// a batch of hundreds of jobs opens each table once, not once per verb.
macro_rules! batch_tables {
    ($($field:ident: $def:ident as Table<$k:ty, $v:ty>;)*) => {
        #[derive(Default)]
        struct OpenTables<'a> {
            $($field: Option<redb::Table<'a, $k, $v>>,)*
        }

        impl<'a> WriteTx<'a> {
            $(
                fn $field(&mut self) -> Result<&mut redb::Table<'a, $k, $v>, StoreError> {
                    if self.tables.$field.is_none() {
                        let table = self.txn.open_table($def).map_err(|e| fail(&mut self.failed, e))?;
                        self.tables.$field = Some(table);
                    }
                    Ok(self.tables.$field.as_mut().expect("opened above"))
                }
            )*
        }
    };
}

batch_tables! {
    meta: META as Table<&'static str, u64>;
    events: EVENTS as Table<u64, &'static [u8]>;
    deliveries: DELIVERIES as Table<&'static str, u64>;
    delivery_ids: DELIVERY_IDS as Table<(u32, &'static str), u64>;
    orders: ORDERS as Table<&'static str, &'static [u8]>;
    payloads: PAYLOADS as Table<&'static str, &'static [u8]>;
    audit_trail: AUDIT as Table<(&'static str, u64), &'static [u8]>;
    stock_rows: STOCK as Table<(&'static str, &'static str), &'static [u8]>;
    reservations: RESERVATIONS as Table<(&'static str, &'static str), i64>;
    reserved: RESERVED as Table<(&'static str, &'static str), i64>;
    outbox: OUTBOX as Table<&'static str, &'static [u8]>;
    stock_journal: STOCK_JOURNAL as Table<(u64, &'static str), &'static [u8]>;
    incoming_stock: INCOMING as Table<&'static str, &'static [u8]>;
    waitlist: WAITLIST as Table<(&'static str, u64, u64, &'static str), ()>;
    pushes: PUSHES as Table<(&'static str, &'static str), &'static [u8]>;
    cursors: CURSORS as Table<&'static str, &'static str>;
    auth_tokens: AUTH_TOKENS as Table<&'static str, &'static [u8]>;
    dead_letters: DEAD_LETTERS as Table<u64, &'static [u8]>;
    failed_events: FAILED_EVENTS as Table<u64, &'static [u8]>;
}

/// A write that failed leaves the transaction unusable: remember it so the
/// batch is aborted, and hand the error to the job.
fn fail<E: std::fmt::Display>(failed: &mut Option<StoreError>, e: E) -> StoreError {
    let err = storage(e);
    *failed = Some(err.clone());
    err
}

/// Domain verbs inside one write transaction.
pub struct WriteTx<'a> {
    txn: &'a WriteTransaction,
    tables: OpenTables<'a>,
    failed: Option<StoreError>,
    /// See [`WriteTx::has_unfiled_delivery_ids`].
    unfiled_delivery_ids: Option<bool>,
}

impl WriteTx<'_> {
    /// Record a failed write; the batch will be aborted.
    fn failed<E: std::fmt::Display>(&mut self, e: E) -> StoreError {
        fail(&mut self.failed, e)
    }

    fn next_id(&mut self, counter: &str) -> Result<u64, StoreError> {
        let meta = self.meta()?;
        let next = meta.get(counter).map_err(storage)?.map_or(1, |v| v.value());
        let r = meta.insert(counter, next + 1).map(|_| ());
        r.map_err(|e| self.failed(e))?;
        Ok(next)
    }

    /// Store an event unless one of its delivery ids was seen before.
    pub fn enqueue_event(&mut self, ev: NewEvent) -> Result<Enqueued, StoreError> {
        let keys: Vec<String> = ev.delivery_ids.iter().map(|d| delivery_key(&ev.workflow, d)).collect();
        let week = week_of(&ev.received_at);
        {
            let ids = self.delivery_ids()?;
            for key in &keys {
                for w in (week.saturating_sub(DEDUPE_WEEKS)..=week).rev() {
                    if let Some(first) = ids.get((w, key.as_str())).map_err(storage)? {
                        return Ok(Enqueued::Duplicate(first.value()));
                    }
                }
            }
        }
        if self.has_unfiled_delivery_ids()? {
            let deliveries = self.deliveries()?;
            for key in &keys {
                if let Some(first) = deliveries.get(key.as_str()).map_err(storage)? {
                    return Ok(Enqueued::Duplicate(first.value()));
                }
            }
        }
        let id = self.next_id(NEXT_EVENT_ID)?;
        let record = EventRecord {
            id,
            workflow: ev.workflow,
            received_at: ev.received_at,
            delivery_ids: ev.delivery_ids,
            event_type: ev.event_type,
            payload: ev.payload,
        };
        let bytes = encode(&record);
        let ids = self.delivery_ids()?;
        let r = keys.iter().try_for_each(|key| ids.insert((week, key.as_str()), id).map(|_| ()));
        r.map_err(|e| self.failed(e))?;
        let r = self.events()?.insert(id, bytes.as_slice()).map(|_| ());
        r.map_err(|e| self.failed(e))?;
        Ok(Enqueued::New(id))
    }

    /// Whether the older table of delivery ids (from before they were filed
    /// by week) holds any; asked once per transaction.
    fn has_unfiled_delivery_ids(&mut self) -> Result<bool, StoreError> {
        if let Some(known) = self.unfiled_delivery_ids {
            return Ok(known);
        }
        let any = self.deliveries()?.first().map_err(storage)?.is_some();
        self.unfiled_delivery_ids = Some(any);
        Ok(any)
    }

    /// Forget up to `limit` delivery ids that arrived before the dedupe
    /// window of `now` ([`DEDUPE_WEEKS`]); gives how many were forgotten,
    /// so a caller can go on in small commits until none are left.
    pub fn forget_delivery_ids(&mut self, now: &str, limit: usize) -> Result<usize, StoreError> {
        let week = week_of(now);
        let oldest_kept = week.saturating_sub(DEDUPE_WEEKS);
        let recorded = self.meta()?.get(DELIVERY_IDS_SINCE).map_err(storage)?.map(|v| v.value());
        let since = match recorded {
            Some(since) => since,
            None => {
                let r = self.meta()?.insert(DELIVERY_IDS_SINCE, u64::from(week)).map(|_| ());
                r.map_err(|e| self.failed(e))?;
                u64::from(week)
            }
        };
        let ids = self.delivery_ids()?;
        let old: Vec<(u32, String)> = ids
            .range((0, "")..(oldest_kept, ""))
            .map_err(storage)?
            .take(limit)
            .map(|row| row.map(|(k, _)| (k.value().0, k.value().1.to_string())))
            .collect::<Result<_, _>>()
            .map_err(storage)?;
        let r = old.iter().try_for_each(|(w, key)| ids.remove((*w, key.as_str())).map(|_| ()));
        r.map_err(|e| self.failed(e))?;
        let mut forgotten = old.len();
        // The older table's ids carry no week: all of them are older than
        // the window once the ids filed by week have filled it.
        if forgotten < limit && since < u64::from(oldest_kept) {
            let deliveries = self.deliveries()?;
            let unfiled: Vec<String> = deliveries
                .iter()
                .map_err(storage)?
                .take(limit - forgotten)
                .map(|row| row.map(|(k, _)| k.value().to_string()))
                .collect::<Result<_, _>>()
                .map_err(storage)?;
            let r = unfiled.iter().try_for_each(|key| deliveries.remove(key.as_str()).map(|_| ()));
            r.map_err(|e| self.failed(e))?;
            forgotten += unfiled.len();
            self.unfiled_delivery_ids = None;
        }
        Ok(forgotten)
    }

    /// The event is fully handled: drop it from the queue.
    pub fn remove_event(&mut self, id: u64) -> Result<(), StoreError> {
        let r = self.events()?.remove(id).map(|_| ());
        r.map_err(|e| self.failed(e))
    }

    /// The event could not become an order: keep why, and drop it from the queue.
    pub fn fail_event(&mut self, failure: &FailedEvent) -> Result<(), StoreError> {
        let bytes = encode(failure);
        let r = self.failed_events()?.insert(failure.event_id, bytes.as_slice()).map(|_| ());
        r.map_err(|e| self.failed(e))?;
        self.remove_event(failure.event_id)
    }

    pub fn order(&mut self, id: &str) -> Result<Option<OrderRecord>, StoreError> {
        let Some(rec) = self.orders()?.get(id).map_err(storage)?.map(|v| decode::<OrderRecord>("order", v.value())).transpose()? else {
            return Ok(None);
        };
        settled(rec, |id| job_open(self.outbox()?, id)).map(Some)
    }

    pub fn put_order(&mut self, rec: &OrderRecord) -> Result<(), StoreError> {
        let bytes = encode(rec);
        let r = self.orders()?.insert(rec.order.id.as_str(), bytes.as_slice()).map(|_| ());
        r.map_err(|e| self.failed(e))
    }

    pub fn put_payload(&mut self, order_id: &str, payload: &[u8]) -> Result<(), StoreError> {
        let r = self.payloads()?.insert(order_id, payload).map(|_| ());
        r.map_err(|e| self.failed(e))
    }

    /// Append to an order's audit trail.
    pub fn audit(&mut self, order_id: &str, entry: &AuditEntry) -> Result<(), StoreError> {
        self.audit_all(order_id, std::slice::from_ref(entry))
    }

    /// Append several entries to an order's audit trail, in order.
    pub fn audit_all(&mut self, order_id: &str, entries: &[AuditEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let t = self.audit_trail()?;
        let last = t.range((order_id, 0)..=(order_id, u64::MAX)).map_err(storage)?.next_back().transpose().map_err(storage)?;
        let seq = last.map_or(0, |(k, _)| k.value().1 + 1);
        // Entries appended together share one row (a JSON array): one insert per append.
        let bytes = if let [entry] = entries { encode(entry) } else { encode(&entries) };
        let r = t.insert((order_id, seq), bytes.as_slice()).map(|_| ());
        r.map_err(|e| self.failed(e))
    }

    pub fn stock(&mut self, sku: &str) -> Result<Vec<(String, StockRow)>, StoreError> {
        stock_rows(self.stock_rows()?, sku)
    }

    pub fn put_stock(&mut self, sku: &str, location: &str, row: &StockRow) -> Result<(), StoreError> {
        let bytes = encode(row);
        let r = self.stock_rows()?.insert((sku, location), bytes.as_slice()).map(|_| ());
        r.map_err(|e| self.failed(e))
    }

    pub fn remove_stock(&mut self, sku: &str, location: &str) -> Result<(), StoreError> {
        let r = self.stock_rows()?.remove((sku, location)).map(|_| ());
        r.map_err(|e| self.failed(e))
    }

    pub fn reserved_total(&mut self, sku: &str) -> Result<i64, StoreError> {
        Ok(reserved_shares(self.reserved()?, sku, None)?.0)
    }

    /// Hold `qty` of `sku` for `order_id` (0 releases it), keeping the
    /// connection's reserved units in step; gives how much that moved the
    /// SKU's reserved total (the caller knows the total before, so the SKU's
    /// rows are not read again).
    pub fn set_reservation(&mut self, sku: &str, order_id: &str, qty: i64) -> Result<i64, StoreError> {
        let qty = qty.max(0);
        let res = self.reservations()?;
        let old = res.get((order_id, sku)).map_err(storage)?.map_or(0, |v| v.value());
        if old == qty {
            return Ok(0);
        }
        let r = if qty > 0 { res.insert((order_id, sku), qty).map(|_| ()) } else { res.remove((order_id, sku)).map(|_| ()) };
        r.map_err(|e| self.failed(e))?;
        let key = (sku, connection_of(order_id));
        let reserved = self.reserved()?;
        let held = reserved.get(key).map_err(storage)?.map_or(0, |v| v.value()) - old + qty;
        let r = if held > 0 { reserved.insert(key, held).map(|_| ()) } else { reserved.remove(key).map(|_| ()) };
        r.map_err(|e| self.failed(e))?;
        Ok(qty - old)
    }

    pub fn put_writeback(&mut self, job: &WritebackJob) -> Result<(), StoreError> {
        let bytes = encode(job);
        let r = self.outbox()?.insert(job.order_id.as_str(), bytes.as_slice()).map(|_| ());
        r.map_err(|e| self.failed(e))
    }

    pub fn writeback(&mut self, order_id: &str) -> Result<Option<WritebackJob>, StoreError> {
        self.outbox()?.get(order_id).map_err(storage)?.map(|v| decode("write-back job", v.value())).transpose()
    }

    /// Close an order's write-back job. The order's record keeps saying
    /// `Pending`; with its job gone it reads as `Done`.
    pub fn remove_writeback(&mut self, order_id: &str) -> Result<(), StoreError> {
        let r = self.outbox()?.remove(order_id).map(|_| ());
        r.map_err(|e| self.failed(e))
    }

    /// Append to a SKU's stock history (its `seq`, one sequence over all SKUs, is assigned here).
    pub fn add_stock_change(&mut self, sku: &str, mut change: StockChange) -> Result<(), StoreError> {
        change.seq = self.next_id(NEXT_STOCK_CHANGE)?;
        let r = self.stock_journal()?.insert((change.seq, sku), encode(&change).as_slice()).map(|_| ());
        r.map_err(|e| self.failed(e))
    }

    pub fn reservation(&mut self, sku: &str, order_id: &str) -> Result<i64, StoreError> {
        Ok(self.reservations()?.get((order_id, sku)).map_err(storage)?.map_or(0, |v| v.value()))
    }

    /// Units of `sku` reserved by the orders of one connection.
    pub fn reserved_by_connection(&mut self, sku: &str, connection: &str) -> Result<i64, StoreError> {
        Ok(self.reserved()?.get((sku, connection)).map_err(storage)?.map_or(0, |v| v.value()))
    }

    pub fn set_incoming(&mut self, sku: &str, incoming: &[Incoming]) -> Result<(), StoreError> {
        let bytes = encode(&incoming);
        let t = self.incoming_stock()?;
        let r = if incoming.is_empty() { t.remove(sku).map(|_| ()) } else { t.insert(sku, bytes.as_slice()).map(|_| ()) };
        r.map_err(|e| self.failed(e))
    }

    pub fn incoming(&mut self, sku: &str) -> Result<Vec<Incoming>, StoreError> {
        let found = self.incoming_stock()?.get(sku).map_err(storage)?.map(|v| decode("incoming", v.value())).transpose();
        found.map(Option::unwrap_or_default)
    }

    pub fn add_to_waitlist(&mut self, e: &WaitlistEntry) -> Result<(), StoreError> {
        let key = (e.sku.as_str(), inverted_priority(e.priority), e.arrival, e.order_id.as_str());
        let r = self.waitlist()?.insert(key, ()).map(|_| ());
        r.map_err(|e| self.failed(e))
    }

    pub fn remove_from_waitlist(&mut self, e: &WaitlistEntry) -> Result<(), StoreError> {
        let key = (e.sku.as_str(), inverted_priority(e.priority), e.arrival, e.order_id.as_str());
        let r = self.waitlist()?.remove(key).map(|_| ());
        r.map_err(|e| self.failed(e))
    }

    pub fn push_state(&mut self, workflow: &str, sku: &str) -> Result<Option<PushState>, StoreError> {
        self.pushes()?.get((workflow, sku)).map_err(storage)?.map(|v| decode("push", v.value())).transpose()
    }

    pub fn put_push_state(&mut self, p: &PushState) -> Result<(), StoreError> {
        let bytes = encode(p);
        let r = self.pushes()?.insert((p.workflow.as_str(), p.sku.as_str()), bytes.as_slice()).map(|_| ());
        r.map_err(|e| self.failed(e))
    }

    pub fn set_auth_token(&mut self, connection: &str, token: &StoredToken) -> Result<(), StoreError> {
        let bytes = encode(token);
        let r = self.auth_tokens()?.insert(connection, bytes.as_slice()).map(|_| ());
        r.map_err(|e| self.failed(e))
    }

    pub fn set_cursor(&mut self, workflow: &str, cursor: &str) -> Result<(), StoreError> {
        let r = self.cursors()?.insert(workflow, cursor).map(|_| ());
        r.map_err(|e| self.failed(e))
    }

    pub fn add_dead_letter(&mut self, mut letter: DeadLetter) -> Result<u64, StoreError> {
        let id = self.next_id(NEXT_DEAD_LETTER_ID)?;
        letter.id = id;
        let bytes = encode(&letter);
        let r = self.dead_letters()?.insert(id, bytes.as_slice()).map(|_| ());
        r.map_err(|e| self.failed(e))?;
        Ok(id)
    }

    pub fn take_dead_letter(&mut self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        let removed = self.dead_letters()?.remove(id).map(|v| v.map(|v| v.value().to_vec()));
        let bytes = removed.map_err(|e| self.failed(e))?;
        bytes.map(|b| decode("dead letter", &b)).transpose()
    }
}

/// Rotated OAuth refresh tokens survive restarts in the state file.
impl TokenStore for Store {
    fn load_token(&self, connection: &str) -> Option<StoredToken> {
        self.auth_token(connection).unwrap_or_else(|e| {
            tracing::error!(connection, "stored OAuth token unreadable: {e}");
            None
        })
    }

    fn save_token(&self, connection: &str, token: StoredToken) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        let store = self.clone();
        let connection = connection.to_string();
        Box::pin(async move { store.write(move |w| w.set_auth_token(&connection, &token)).await.map_err(|e| e.to_string()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(delivery: &str) -> NewEvent {
        NewEvent {
            workflow: "wf".into(),
            received_at: "t".into(),
            delivery_ids: vec![format!("X-Id:{delivery}")],
            event_type: None,
            payload: serde_json::value::RawValue::from_string("{\"id\":1}".into()).unwrap(),
        }
    }

    #[tokio::test]
    async fn duplicates_are_detected_across_batches_and_reopen() {
        let dir = tempdir();
        let path = dir.join("s.redb");
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.write(|w| w.enqueue_event(event("a"))).await.unwrap(), Enqueued::New(1));
            assert_eq!(store.write(|w| w.enqueue_event(event("a"))).await.unwrap(), Enqueued::Duplicate(1));
            assert_eq!(store.write(|w| w.enqueue_event(event("b"))).await.unwrap(), Enqueued::New(2));
            store.close().await;
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.pending_events().unwrap(), vec![1, 2]);
        assert_eq!(store.write(|w| w.enqueue_event(event("b"))).await.unwrap(), Enqueued::Duplicate(2));
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    async fn enqueue_at(store: &Store, delivery: &'static str, at: &'static str) -> Enqueued {
        store.write(move |w| w.enqueue_event(NewEvent { received_at: at.into(), ..event(delivery) })).await.unwrap()
    }

    async fn forget_at(store: &Store, at: &'static str) -> usize {
        store.write(move |w| w.forget_delivery_ids(at, 100)).await.unwrap()
    }

    #[tokio::test]
    async fn delivery_ids_are_recognised_for_two_weeks_and_then_forgotten() {
        let dir = tempdir();
        let store = Store::open(&dir.join("s.redb")).unwrap();
        assert_eq!(enqueue_at(&store, "a", "2026-03-04T10:00:00Z").await, Enqueued::New(1));
        // Thirteen days on, wherever the week boundaries fall, the id is still known.
        let day13 = "2026-03-17T23:00:00Z";
        assert_eq!(enqueue_at(&store, "a", day13).await, Enqueued::Duplicate(1));
        assert_eq!(forget_at(&store, day13).await, 0);
        assert_eq!(enqueue_at(&store, "a", day13).await, Enqueued::Duplicate(1));
        // Three weeks on it is forgotten: removed, and a new delivery with it is queued.
        let day22 = "2026-03-26T10:00:00Z";
        assert_eq!(forget_at(&store, day22).await, 1);
        assert_eq!(enqueue_at(&store, "a", day22).await, Enqueued::New(2));
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn delivery_ids_of_older_files_are_recognised_until_the_window_has_passed() {
        let dir = tempdir();
        let store = Store::open(&dir.join("s.redb")).unwrap();
        // An id as older versions filed it: without its week.
        {
            let txn = store.inner.db.begin_write().unwrap();
            txn.open_table(DELIVERIES).unwrap().insert(delivery_key("wf", "X-Id:old").as_str(), 7).unwrap();
            txn.commit().unwrap();
        }
        let start = "2026-03-04T10:00:00Z";
        assert_eq!(enqueue_at(&store, "old", start).await, Enqueued::Duplicate(7));
        // The first look for old ids notes when filing by week began; the
        // older ids stay until the ids filed by week cover the window.
        assert_eq!(forget_at(&store, start).await, 0);
        let day13 = "2026-03-17T10:00:00Z";
        assert_eq!(forget_at(&store, day13).await, 0);
        assert_eq!(enqueue_at(&store, "old", day13).await, Enqueued::Duplicate(7));
        let day22 = "2026-03-26T10:00:00Z";
        assert_eq!(forget_at(&store, day22).await, 1);
        assert_eq!(enqueue_at(&store, "old", day22).await, Enqueued::New(1));
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn unhurried_writes_keep_their_turn_and_are_committed_alone_and_at_close() {
        let dir = tempdir();
        let path = dir.join("s.redb");
        let store = Store::open(&path).unwrap();
        // Alone: committed once its wait for company is over.
        store.write_unhurried(|w| w.set_cursor("alone", "1")).await.unwrap();
        assert_eq!(store.cursor("alone").unwrap().as_deref(), Some("1"));
        // Queued before a hurried write, it runs first, whichever commit carries it.
        let (first, seen) = tokio::join!(
            store.write_unhurried(|w| w.set_cursor("pair", "unhurried")),
            store.write(|w| Ok(w.cursors()?.get("pair").map_err(storage)?.map(|v| v.value().to_string())))
        );
        first.unwrap();
        assert_eq!(seen.unwrap().as_deref(), Some("unhurried"));
        // Closing the store commits what still waits for company.
        let (last, ()) = tokio::join!(store.write_unhurried(|w| w.set_cursor("last", "2")), store.close());
        last.unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.cursor("last").unwrap().as_deref(), Some("2"));
    }

    #[tokio::test]
    async fn reservation_totals_follow_the_rows() {
        let dir = tempdir();
        let store = Store::open(&dir.join("s.redb")).unwrap();
        store
            .write(|w| {
                // Gives the SKU's total after the hold, checking the change set_reservation reports.
                let mut hold = |sku: &str, order: &str, qty: i64| -> Result<i64, StoreError> {
                    let before = w.reserved_total(sku)?;
                    let moved = w.set_reservation(sku, order, qty)?;
                    let after = w.reserved_total(sku)?;
                    assert_eq!(moved, after - before);
                    Ok(after)
                };
                assert_eq!(hold("A", "web:1", 2)?, 2);
                assert_eq!(hold("A", "web:2", 3)?, 5);
                assert_eq!(hold("A", "erp:7", 4)?, 9);
                assert_eq!(hold("B", "web:1", 1)?, 1);
                assert_eq!(hold("A", "web:1", 0)?, 7);
                assert_eq!(w.reserved_by_connection("A", "web")?, 3);
                assert_eq!(w.reservation("A", "web:2")?, 3);
                w.set_reservation("B", "web:1", 0)
            })
            .await
            .unwrap();
        assert_eq!(store.reserved_total("A").unwrap(), 7);
        assert_eq!(store.reserved_all().unwrap(), [("A".to_string(), 7)]);
        assert_eq!(store.reservations("A").unwrap(), [("erp:7".to_string(), 4), ("web:2".to_string(), 3)]);
        let picture = store.sku_picture("A", Some("erp")).unwrap();
        assert_eq!((picture.reserved, picture.reserved_by_connection), (7, 4));
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn audit_entries_read_back_in_order_however_they_were_appended() {
        let dir = tempdir();
        let store = Store::open(&dir.join("s.redb")).unwrap();
        let entry = |message: &str| AuditEntry {
            at: "2026-01-01T00:00:00Z".into(),
            kind: crate::store::AuditKind::Rule,
            message: message.into(),
            call: None,
        };
        store.write(move |w| w.audit("o1", &entry("one"))).await.unwrap();
        store.write(move |w| w.audit_all("o1", &[entry("two"), entry("three")])).await.unwrap();
        store.write(move |w| w.audit_all("o1", &[entry("four")])).await.unwrap();
        store.write(move |w| w.audit_all("o2", &[entry("other")])).await.unwrap();
        let messages: Vec<String> = store.audit("o1").unwrap().into_iter().map(|e| e.message).collect();
        assert_eq!(messages, ["one", "two", "three", "four"]);
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_pending_write_back_reads_as_done_once_its_job_is_gone() {
        use crate::model::{Customer, Decision, Order};
        let dir = tempdir();
        let store = Store::open(&dir.join("s.redb")).unwrap();
        let record = |id: &str, writeback: WritebackState| OrderRecord {
            order: Order {
                id: id.into(),
                platform: "shopify".into(),
                connection: "shop".into(),
                workflow: "wf".into(),
                external_id: id.trim_start_matches("shop:").into(),
                number: "#1".into(),
                customer: Customer::default(),
                lines: Vec::new(),
                received_at: "2026-01-01T00:00:00Z".into(),
            },
            status: OrderStatus::Approved,
            reason: String::new(),
            priority: 0,
            error: None,
            writeback,
            history: Vec::new(),
            stock_seen: Default::default(),
            allocations: Vec::new(),
            config_version: 1,
            event_id: 1,
            arrival: 1,
        };
        let job = |id: &str| WritebackJob {
            order_id: id.into(),
            workflow: "wf".into(),
            decision: Decision::Approve,
            created_at: "2026-01-01T00:00:00Z".into(),
            steps: Vec::new(),
        };
        let (pending, lettered) = (record("shop:1", WritebackState::Pending), record("shop:2", WritebackState::DeadLettered));
        store
            .write(move |w| {
                w.put_order(&pending)?;
                w.put_writeback(&job("shop:1"))?;
                w.put_order(&lettered)
            })
            .await
            .unwrap();
        let states = |store: &Store| {
            let listed: Vec<_> = store.orders(None, 10).unwrap().into_iter().map(|r| r.writeback).collect();
            (store.order("shop:1").unwrap().unwrap().writeback, listed)
        };
        let (one, listed) = states(&store);
        assert_eq!(one, WritebackState::Pending, "its job is still in the outbox");
        assert_eq!(listed, [WritebackState::Pending, WritebackState::DeadLettered]);

        store.write(|w| w.remove_writeback("shop:1")).await.unwrap();
        let (one, listed) = states(&store);
        assert_eq!(one, WritebackState::Done);
        assert_eq!(listed, [WritebackState::Done, WritebackState::DeadLettered], "other states stand as written");
        let in_a_write = store.write(|w| w.order("shop:1")).await.unwrap().unwrap();
        assert_eq!(in_a_write.writeback, WritebackState::Done);
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    fn change(cause: &str) -> StockChange {
        StockChange {
            seq: 0,
            at: "2026-01-01T00:00:00Z".into(),
            kind: crate::store::StockChangeKind::Reserved,
            location: None,
            on_hand_delta: 0,
            reserved_delta: 1,
            on_hand_after: 10,
            reserved_after: 1,
            cause: cause.into(),
        }
    }

    fn causes(history: Vec<StockChange>) -> Vec<String> {
        history.into_iter().map(|c| c.cause).collect()
    }

    fn journalled(store: &Store) -> u64 {
        store.read(|t| t.open_table(STOCK_JOURNAL).map_err(storage)?.len().map_err(storage)).unwrap()
    }

    #[tokio::test]
    async fn stock_history_reads_the_same_journalled_and_filed() {
        let dir = tempdir();
        let path = dir.join("s.redb");
        let store = Store::open(&path).unwrap();
        let sku_of = |i: u64| if i % 3 == 0 { "B" } else { "A" };
        let short_of_a_fold = STOCK_JOURNAL_FOLD_AT - 1;
        store.write(move |w| (0..short_of_a_fold).try_for_each(|i| w.add_stock_change(sku_of(i), change(&i.to_string())))).await.unwrap();
        assert_eq!(journalled(&store), short_of_a_fold);
        let all_a: Vec<String> = (0..short_of_a_fold).filter(|i| sku_of(*i) == "A").map(|i| i.to_string()).collect();
        assert_eq!(causes(store.stock_history("A", usize::MAX).unwrap()), all_a);
        assert_eq!(causes(store.stock_history("A", 2).unwrap()), all_a[all_a.len() - 2..]);

        // One more fills the journal: it is filed, and reads as before.
        store.write(|w| w.add_stock_change("A", change("last"))).await.unwrap();
        store.write(|_| Ok(())).await.unwrap();
        assert_eq!(journalled(&store), 0);
        let mut expected = all_a.clone();
        expected.push("last".into());
        assert_eq!(causes(store.stock_history("A", usize::MAX).unwrap()), expected);
        assert_eq!(causes(store.stock_history("A", 1).unwrap()), ["last"]);

        // Newer changes sit in the journal again, after the filed ones.
        store.write(|w| w.add_stock_change("A", change("newest"))).await.unwrap();
        expected.push("newest".into());
        store.close().await;
        drop(store);
        let store = Store::open(&path).unwrap();
        let history = store.stock_history("A", usize::MAX).unwrap();
        assert!(history.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(causes(history), expected);
        assert_eq!(causes(store.stock_history("A", 2).unwrap()), ["last", "newest"]);
        assert_eq!(store.stock_history("B", usize::MAX).unwrap().len() as u64, short_of_a_fold.div_ceil(3));
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_history_numbered_per_sku_stays_in_order_after_the_upgrade() {
        let dir = tempdir();
        let path = dir.join("s.redb");
        // A state file from before the journal: each SKU numbered from 1, no counter.
        state_file_from_before(&path, |txn| {
            let mut history = txn.open_table(STOCK_HISTORY).unwrap();
            for seq in 1..=5 {
                history.insert(("A", seq), encode(&change(&format!("old {seq}"))).as_slice()).unwrap();
            }
            history.insert(("B", 1), encode(&change("old B")).as_slice()).unwrap();
        });
        let store = Store::open(&path).unwrap();
        store.write(|w| w.add_stock_change("B", change("new B"))).await.unwrap();
        assert_eq!(causes(store.stock_history("B", usize::MAX).unwrap()), ["old B", "new B"]);
        assert_eq!(causes(store.stock_history("A", 2).unwrap()), ["old 4", "old 5"]);
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn reservations_kept_by_sku_are_rekeyed_by_order_on_open() {
        let dir = tempdir();
        let path = dir.join("s.redb");
        // A state file from before: (sku, order id) rows and a total per SKU.
        state_file_from_before(&path, |txn| {
            let mut rows = txn.open_table(RESERVATIONS_BY_SKU).unwrap();
            rows.insert(("A", "web:1"), 2).unwrap();
            rows.insert(("A", "web:2"), 3).unwrap();
            rows.insert(("A", "erp:9"), 1).unwrap();
            rows.insert(("B", "web:1"), 4).unwrap();
            let mut totals = txn.open_table(RESERVED_TOTALS_BY_SKU).unwrap();
            totals.insert("A", 6).unwrap();
            totals.insert("B", 4).unwrap();
        });
        let store = Store::open(&path).unwrap();
        assert_eq!(store.reserved_all().unwrap(), [("A".to_string(), 6), ("B".to_string(), 4)]);
        assert_eq!((store.sku_picture("A", Some("web")).unwrap().reserved_by_connection), 5);
        assert_eq!(store.reservations("B").unwrap(), [("web:1".to_string(), 4)]);
        // Releasing after the move keeps every figure in step.
        let moved = store.write(|w| w.set_reservation("A", "web:2", 0)).await.unwrap();
        assert_eq!((moved, store.reserved_total("A").unwrap()), (-3, 3));
        store.close().await;
        drop(store);
        // The old tables are gone, so a second open moves nothing twice.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.reserved_total("A").unwrap(), 3);
        let tables: Vec<String> = store.inner.db.begin_read().unwrap().list_tables().unwrap().map(|t| t.name().to_string()).collect();
        assert!(!tables.iter().any(|t| t == "reservations" || t == "reserved_totals"), "{tables:?}");
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A state file written straight through redb, in a layout of before.
    fn state_file_from_before(path: &Path, fill: impl FnOnce(&WriteTransaction)) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        fill(&txn);
        txn.commit().unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ordersync-store-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
