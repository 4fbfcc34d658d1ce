//! Forgetting what deduplication no longer needs: delivery ids older than
//! the dedupe window (see `store::tables::DEDUPE_WEEKS`), so the index every
//! webhook is checked against stays the size of a few weeks of traffic, not
//! of the daemon's whole history.

use std::time::Duration;

use super::Runtime;

/// How often old delivery ids are looked for; the window is weeks long.
const EVERY: Duration = Duration::from_secs(3600);

/// Ids removed per commit, so a large backlog of old ids never holds up intake.
const PER_COMMIT: usize = 5_000;

/// Forget old delivery ids now and then every [`EVERY`], until the daemon stops.
pub async fn run(rt: std::sync::Arc<Runtime>) {
    loop {
        forget_old_delivery_ids(&rt).await;
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = rt.stopped() => return,
        }
    }
}

/// Remove delivery ids past the window in commits of [`PER_COMMIT`]; gives how many.
async fn forget_old_delivery_ids(rt: &Runtime) -> usize {
    let mut total = 0;
    while !rt.is_stopping() {
        let now = rt.now();
        match rt.store.write_unhurried(move |w| w.forget_delivery_ids(&now, PER_COMMIT)).await {
            Ok(n) => {
                total += n;
                if n < PER_COMMIT {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!("could not forget old delivery ids: {e}");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(forgotten = total, "forgot delivery ids older than the dedupe window");
    }
    total
}
