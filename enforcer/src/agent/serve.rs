//! The serving loop: decisions from the ring buffer into the audit log, updates from the
//! bundle directory and the control socket, deadlines, signals and the watchdog.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tokio::sync::mpsc;

use super::{Agent, decisions, drops, watch, window};
use crate::audit::{self, AuditLog, AuditOptions};
use crate::service::control::protocol::Data;
use crate::service::control::{self, Request, Response};
use crate::service::http;
use crate::service::systemd;

/// How often everything is re-read even when nothing announced a change: bounds the
/// delay of a missed notification and picks up bundles whose window has opened.
const RESYNC: Duration = Duration::from_secs(30);

/// How long a shutdown waits for the witnesses to take the last checkpoint.
const WITNESS_SHUTDOWN: Duration = Duration::from_secs(5);

impl Agent {
    /// Follows decisions into the audit log and serves updates until SIGINT or SIGTERM.
    /// Stopping leaves enforcement pinned and on.
    pub fn serve(mut self) -> anyhow::Result<()> {
        let me = std::process::id();
        // Governed tasks may not signal the agent while it runs.
        self.enforcement.protect(me)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let served = runtime.block_on(self.serve_loop());
        let unprotected = self.enforcement.unprotect(me);
        systemd::stopping();
        served?;
        unprotected?;
        tracing::info!("agent stopping; enforcement stays pinned and on");
        Ok(())
    }

    pub(super) fn open_audit_log(&self) -> anyhow::Result<AuditLog> {
        let host_key = match &self.config.host_key {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from(audit::DEFAULT_HOST_KEY)).filter(|p| p.exists()),
        };
        let host_key = host_key
            .map(|p| {
                crate::authz::trust::SigningKey::load(&p)
                    .with_context(|| format!("audit host key {}", p.display()))
            })
            .transpose()?;
        if host_key.is_none() {
            tracing::warn!("no audit host key: checkpoints are unsigned (see host_key)");
        }
        let opts = AuditOptions {
            origin: self.config.audit_origin.clone(),
            checkpoint_interval: self.config.checkpoint_interval(),
            ..AuditOptions::default()
        };
        AuditLog::open(self.config.audit_dir(), host_key, opts).with_context(|| {
            format!(
                "opening the audit log in {}",
                self.config.audit_dir().display()
            )
        })
    }

    pub(super) async fn serve_loop(&mut self) -> anyhow::Result<()> {
        use tokio::io::unix::AsyncFd;
        use tokio::signal::unix::{SignalKind, signal};

        // Before anything else is bound: a port in use or a missing token file stops the
        // agent here, naming the setting.
        let http_listener = match &self.config.http {
            Some(settings) => Some(http::bind(settings)?),
            None => None,
        };
        let mut log = self.open_audit_log()?;
        let host_key = log.host_vkey();
        self.window.update(|s| s.host_key = host_key);
        let first_seq = log.next_seq();
        let witnesses = self.start_witnesses()?;
        let offer = |log: &AuditLog| {
            if let (Some(w), Some(note)) = (&witnesses, log.last_note()) {
                w.notes.send_if_modified(|offered| {
                    let new = offered.as_ref() != Some(note);
                    if new {
                        *offered = Some(note.clone());
                    }
                    new
                });
            }
        };
        let ring = self
            .enforcement
            .take_events()
            .context("decision ring buffer already taken")?;
        // SAFETY: the ring buffer owns its fd and moves into the AsyncFd, so the fd stays
        // open for as long as it is registered.
        let mut ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow::anyhow!("watching the decision ring buffer: {e}"))?;
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
        let listener = control::bind(self.config.socket())?;
        let (tx, mut requests) = mpsc::channel::<control::Pending>(16);
        let control_task = tokio::spawn(control::serve(listener, tx));
        let http_task = http_listener.map(|l| {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(%addr, "HTTP window open: /healthz, /readyz, /metrics, /api/v1/");
            }
            let audit_dir = self.config.audit_dir().to_owned();
            tokio::spawn(http::serve(l, self.window.clone(), audit_dir))
        });
        let mut watcher = watch::Watcher::or_poll(self.watched_dirs().iter().map(PathBuf::as_path));
        // Drops since the last agent accounted for them (while none was reading) become a
        // gap record now, before anything else is read.
        let ledger = drops::DropLedger::new(
            self.config.audit_dir(),
            audit::boot_id()?,
            self.enforcement.drop_counter_id()?,
        );
        let mut dropped_seen = ledger.accounted();
        let account = |log: &mut AuditLog, seen: &mut u64, now: u64| -> anyhow::Result<()> {
            if now > *seen {
                tracing::error!(lost = now - *seen, "decisions lost: ring buffer was full");
                log.append_gap(now - *seen)?;
                *seen = now;
                log.flush()?;
                ledger
                    .record(now)
                    .context("recording the accounted drop count")?;
            }
            Ok(())
        };
        let dropped = self.enforcement.dropped_events()?;
        if dropped < dropped_seen {
            // Cannot happen for one map; never let it hide later drops.
            dropped_seen = 0;
        }
        account(&mut log, &mut dropped_seen, dropped)?;
        ledger
            .record(dropped_seen)
            .context("recording the accounted drop count")?;
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let watchdog = systemd::watchdog_interval().map(|i| i / 2);
        let mut last_ping = Instant::now();
        let mut last_sync = Instant::now();

        systemd::ready(&self.summary());
        if self.invocation.print_decisions.is_some() {
            println!("following decisions (Ctrl-C to stop; enforcement stays on)");
        }
        tracing::info!(socket = %self.config.socket().display(), "agent ready");
        loop {
            for pending in self.pending.drain(..) {
                // Without the artifact, proofs that cite it cannot be made; the record
                // itself still matters more, so this is not fatal.
                if let Some((id, bytes)) = &pending.artifact
                    && let Err(e) = log.keep_artifact(id, bytes)
                {
                    tracing::warn!(%id, "cannot keep the artifact for proofs: {e}");
                }
                log.append_authorization(pending.change)?;
            }
            // A reload (signal or socket) may have moved the directories.
            if std::mem::take(&mut self.rewatch) {
                watcher = watch::Watcher::or_poll(self.watched_dirs().iter().map(PathBuf::as_path));
            }
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    systemd::reloading();
                    if let Err(e) = self.reload() {
                        tracing::error!("{e:#}");
                        self.last_error = Some(format!("{e:#}"));
                    }
                    systemd::ready_after_reload(&self.summary());
                }
                changed = watcher.changed() => {
                    changed.context("watching the bundle directory")?;
                    // A copy arrives as several events; let it finish, then read once.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = tokio::time::timeout(Duration::ZERO, watcher.changed()).await;
                    self.resync();
                    last_sync = Instant::now();
                }
                Some((request, reply)) = requests.recv() => {
                    let response = self.handle(request);
                    let _ = reply.send(response);
                    systemd::status(&self.summary());
                }
                _ = ticker.tick() => {
                    // Read the ring buffer on every tick too: a wakeup lost for any reason
                    // costs a second, and readiness can tell the drain runs.
                    self.record_decisions(ring.get_mut(), &mut log)?;
                    let dropped = self.enforcement.dropped_events()?;
                    account(&mut log, &mut dropped_seen, dropped)?;
                    log.tick()?;
                    offer(&log);
                    self.publish_live(&window::Live {
                        log: &log,
                        records: log.next_seq() - first_seq,
                        dropped,
                        last_drain: Instant::now(),
                    });
                    let due = self.view.next_deadline.is_some_and(|t| SystemTime::now() >= t);
                    if due || last_sync.elapsed() >= RESYNC {
                        self.resync();
                        last_sync = Instant::now();
                    }
                    if watchdog.is_some_and(|w| last_ping.elapsed() >= w) {
                        systemd::watchdog();
                        last_ping = Instant::now();
                    }
                }
                guard = ring.readable_mut() => {
                    let mut guard = guard.context("waiting for decisions")?;
                    self.record_decisions(guard.get_inner_mut(), &mut log)?;
                    guard.clear_ready();
                    // The kernel wakes the reader only for a record that finds it caught
                    // up. One committed after the read above but before its wakeup was
                    // cleared would wait for a wakeup that never comes: read once more.
                    self.record_decisions(guard.get_inner_mut(), &mut log)?;
                    // Losses are recorded where they happened in the stream, as a gap.
                    account(&mut log, &mut dropped_seen, self.enforcement.dropped_events()?)?;
                    log.flush()?;
                }
            }
        }
        control_task.abort();
        if let Some(task) = http_task {
            task.abort();
        }
        let _ = std::fs::remove_file(self.config.socket());
        let last = log.close()?;
        if let Some(WitnessTask { notes, task }) = witnesses {
            if let Some(note) = last {
                let _ = notes.send(Some(note));
            }
            // The pusher ends once it has sent what it was given; a witness that does
            // not answer must not hold up the shutdown for long.
            drop(notes);
            if tokio::time::timeout(WITNESS_SHUTDOWN, task).await.is_err() {
                tracing::warn!("the shutdown checkpoint did not reach every witness in time");
            }
        }
        Ok(())
    }

    /// Starts the task that sends checkpoints to the configured witnesses, if any.
    fn start_witnesses(&self) -> anyhow::Result<Option<WitnessTask>> {
        let witnesses = self.config.witnesses.as_deref().unwrap_or_default();
        if witnesses.is_empty() {
            return Ok(None);
        }
        let pusher = crate::witness::Pusher::new(self.config.audit_dir(), witnesses)
            .map_err(|e| anyhow::anyhow!("witnesses: {e}"))?;
        let (notes, rx) = tokio::sync::watch::channel(None);
        tracing::info!(
            count = witnesses.len(),
            "sending audit checkpoints to witnesses"
        );
        Ok(Some(WitnessTask {
            notes,
            task: tokio::spawn(pusher.run(rx)),
        }))
    }

    /// Appends every decision waiting in `ring` to the audit log (and prints it when asked).
    fn record_decisions(
        &self,
        ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
        log: &mut AuditLog,
    ) -> anyhow::Result<()> {
        // Kept for the HTTP window's counters and stream only: without it, no copy per
        // decision.
        let counting = self.config.http.is_some();
        let mut read = Vec::new();
        while let Some(item) = ring.next() {
            let Some(event) = decisions::decode(&item) else {
                tracing::error!(len = item.len(), "malformed decision record");
                continue;
            };
            let labels = self.labels.audit(&event);
            if counting {
                log.append_decision_and(&event, &labels, |r| self.window.publish_decision(r))?;
            } else {
                log.append_decision(&event, &labels)?;
            }
            if let Some(json) = self.invocation.print_decisions {
                println!("{}", self.labels.render(&event, log.boot_id(), json));
            }
            if counting {
                read.push(event);
            }
        }
        self.count_decisions(&read);
        Ok(())
    }

    pub(super) fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.config.bundle_dir().to_path_buf()];
        dirs.extend(
            self.invocation
                .artifacts
                .iter()
                .filter(|p| p.is_dir())
                .cloned(),
        );
        dirs
    }

    pub(super) fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Push { name, artifact } => self.push(false, &name, &artifact),
            Request::Revoke { name, artifact } => self.push(true, &name, &artifact),
            Request::Status => match self.status() {
                Ok(report) => Response::ok(self.summary(), Some(Data::Status(Box::new(report)))),
                Err(e) => Response::error(format!("{e:#}")),
            },
            Request::List => Response::ok(self.summary(), Some(Data::List(self.list()))),
            Request::Reload => match self.reload() {
                Ok(()) => Response::ok(format!("configuration reloaded; {}", self.summary()), None),
                Err(e) => Response::error(format!("{e:#}")),
            },
        }
    }
}

/// The task that sends checkpoints to the witnesses, and where it is offered them.
struct WitnessTask {
    notes: tokio::sync::watch::Sender<Option<crate::audit::tlog::SignedNote>>,
    task: tokio::task::JoinHandle<()>,
}
