//! Blocking jobs run at the same time on tokio's blocking pool, at most `at_once` (the pool's
//! bound), each passing events back to the caller's thread as they happen: several publish
//! targets, whose clients block on the network.

/// A job: its work, given where its events go (records it created, say).
pub type Job<T, E> = Box<dyn FnOnce(&mut dyn FnMut(E)) -> T + Send>;

/// Run `jobs`, at most `at_once` at a time; `on_event` sees every event on this thread the
/// moment it arrives (with the index of the job that sent it). Results in the jobs' order; a
/// job that panicked gives `panicked(message)`.
pub fn blocking_all<T: Send + 'static, E: Send + 'static>(
    jobs: Vec<Job<T, E>>,
    at_once: usize,
    on_event: &mut dyn FnMut(usize, E),
    panicked: impl Fn(String) -> T,
) -> std::io::Result<Vec<T>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(at_once.max(1))
        .build()?;
    let (tx, rx) = std::sync::mpsc::channel::<(usize, E)>();
    let tasks: Vec<_> = jobs
        .into_iter()
        .enumerate()
        .map(|(i, job)| {
            let tx = tx.clone();
            rt.spawn_blocking(move || {
                job(&mut |e| {
                    let _ = tx.send((i, e));
                })
            })
        })
        .collect();
    drop(tx);
    // Ends once every job is done: each holds a sender until then.
    for (i, e) in rx {
        on_event(i, e);
    }
    Ok(tasks
        .into_iter()
        .map(|t| {
            rt.block_on(t)
                .unwrap_or_else(|e| panicked(format!("the job failed: {e}")))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn at_most_at_once_run_together_and_events_come_back_tagged() {
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<Job<usize, String>> = (0..6usize)
            .map(|i| {
                let (now, most) = (now.clone(), most.clone());
                Box::new(move |emit: &mut dyn FnMut(String)| {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    emit(format!("job {i}"));
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    now.fetch_sub(1, Ordering::SeqCst);
                    i * 10
                }) as Job<usize, String>
            })
            .collect();
        let mut events = Vec::new();
        let out = blocking_all(jobs, 2, &mut |i, e| events.push((i, e)), |_| 99).unwrap();
        assert_eq!(out, [0, 10, 20, 30, 40, 50]);
        assert_eq!(most.load(Ordering::SeqCst), 2);
        events.sort();
        assert_eq!(
            events,
            (0..6).map(|i| (i, format!("job {i}"))).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_panicking_job_is_one_result() {
        let jobs: Vec<Job<Result<u8, String>, ()>> = vec![
            Box::new(|_: &mut dyn FnMut(())| Ok(1)),
            Box::new(|_: &mut dyn FnMut(())| panic!("boom")),
        ];
        let out = blocking_all(jobs, 4, &mut |_, _| {}, Err).unwrap();
        assert_eq!(out[0], Ok(1));
        assert!(out[1].as_ref().unwrap_err().contains("failed"));
    }
}
