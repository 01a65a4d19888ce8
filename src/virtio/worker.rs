//! The thread a virtio device runs on: queue notifications, activation and reset arrive as
//! messages, so the vCPU that writes a notify register returns at once and never waits for the
//! device's I/O. The thread alone owns the device and its running queues.
//!
//! A *synchronous* worker (record and replay, src/record.rs) makes the vCPU wait instead until
//! the device has served every available buffer and raised its interrupt: a request completes
//! at the instruction that notified, so the run does not depend on the host's timing.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, Sender};
use janus_accel::GuestMemory;

use super::{DeviceContext, Interrupt, Queue, QueueConfig, Shared, VirtioDevice};

enum Msg {
    Activate(u64, Vec<Option<QueueConfig>>),
    Notify(usize),
    Poll,
    Reset(Sender<()>),
    /// Answered once the messages before it are served (synchronous workers).
    Barrier(Sender<()>),
    Stop,
}

/// Wakes a device's thread to poll its input (see [`VirtioDevice::poll`]).
#[derive(Clone, Debug)]
pub struct Waker(Sender<Msg>);

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Activate(..) => f.write_str("Activate"),
            Msg::Notify(q) => write!(f, "Notify({q})"),
            Msg::Poll => f.write_str("Poll"),
            Msg::Reset(_) => f.write_str("Reset"),
            Msg::Barrier(_) => f.write_str("Barrier"),
            Msg::Stop => f.write_str("Stop"),
        }
    }
}

impl Waker {
    /// A waker that wakes nothing (for a device driven without a thread, in tests).
    pub fn detached() -> Self {
        Waker(crossbeam_channel::unbounded().0)
    }

    /// Asks the thread to poll the device.
    pub fn wake(&self) {
        let _ = self.0.send(Msg::Poll);
    }
}

/// The handle of a device's thread (the thread ends when the handle is dropped).
#[derive(Debug)]
pub struct Worker {
    tx: Sender<Msg>,
    synchronous: bool,
}

impl Worker {
    /// Starts `device`'s thread.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn spawn(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        irq: Arc<dyn Interrupt>,
        shared: Arc<Shared>,
        synchronous: bool,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let waker = Waker(tx.clone());
        std::thread::Builder::new()
            .name(format!("virtio-{}", device.label()))
            .spawn(move || run(device, mem, irq, shared, &rx, waker, synchronous))?;
        Ok(Worker { tx, synchronous })
    }

    /// The driver set DRIVER_OK: run the enabled queues (`None`: not enabled).
    pub fn activate(&self, features: u64, queues: Vec<Option<QueueConfig>>) {
        let _ = self.tx.send(Msg::Activate(features, queues));
        self.wait();
    }

    /// Queue `index` was notified.
    pub fn notify(&self, index: usize) {
        let _ = self.tx.send(Msg::Notify(index));
        self.wait();
    }

    /// A synchronous worker: waits until the thread has served what was sent.
    fn wait(&self) {
        if !self.synchronous {
            return;
        }
        let (ack, done) = crossbeam_channel::bounded(1);
        if self.tx.send(Msg::Barrier(ack)).is_ok() {
            let _ = done.recv();
        }
    }

    /// Resets the device and waits until its thread has dropped the queues (so it writes no
    /// more into guest memory).
    pub fn reset(&self) {
        let (ack, done) = crossbeam_channel::bounded(1);
        if self.tx.send(Msg::Reset(ack)).is_ok() {
            let _ = done.recv();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

fn run(
    mut device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    irq: Arc<dyn Interrupt>,
    shared: Arc<Shared>,
    rx: &Receiver<Msg>,
    waker: Waker,
    synchronous: bool,
) {
    let mut queues: Vec<Option<Queue>> = Vec::new();
    let mut ctx = DeviceContext {
        mem,
        features: 0,
        waker,
    };
    while let Ok(msg) = rx.recv() {
        let broken = shared.needs_reset.load(Ordering::Acquire);
        match msg {
            Msg::Stop => break,
            Msg::Reset(ack) => {
                queues.clear();
                device.reset();
                let _ = ack.send(());
            }
            Msg::Barrier(ack) => {
                let _ = ack.send(());
            }
            _ if broken => {}
            Msg::Activate(features, configs) => {
                ctx.features = features;
                let event_idx = features & super::F_RING_EVENT_IDX != 0;
                queues = Vec::with_capacity(configs.len());
                let mut error = false;
                for c in configs {
                    queues.push(match c {
                        Some(c) => match Queue::new(&ctx.mem, &c, event_idx) {
                            Ok(q) => Some(q),
                            Err(e) => {
                                log_broken(device.label(), &e);
                                error = true;
                                None
                            }
                        },
                        None => None,
                    });
                }
                if error {
                    mark_broken(&shared, &*irq);
                } else {
                    device.activate(&ctx);
                }
            }
            Msg::Notify(i) => {
                while let Some(Some(q)) = queues.get_mut(i) {
                    match device.notify(&ctx, i, q) {
                        Ok(used) => {
                            if used && q.needs_interrupt(&ctx.mem) {
                                irq.queue(q.vector);
                            }
                            // More than a queue's worth: come back after the messages waiting
                            // (a synchronous worker serves it all now).
                            if used && q.has_available(&ctx.mem) {
                                if synchronous {
                                    continue;
                                }
                                let _ = ctx.waker.0.send(Msg::Notify(i));
                            }
                        }
                        Err(e) => {
                            log_broken(device.label(), &e);
                            mark_broken(&shared, &*irq);
                        }
                    }
                    break;
                }
            }
            Msg::Poll => {
                if queues.is_empty() {
                    continue;
                }
                match device.poll(&ctx, &mut queues) {
                    Ok(used) => {
                        for i in used {
                            if let Some(Some(q)) = queues.get_mut(i)
                                && q.needs_interrupt(&ctx.mem)
                            {
                                irq.queue(q.vector);
                            }
                        }
                    }
                    Err(e) => {
                        log_broken(device.label(), &e);
                        mark_broken(&shared, &*irq);
                    }
                }
            }
        }
    }
}

fn mark_broken(shared: &Shared, irq: &dyn Interrupt) {
    shared.needs_reset.store(true, Ordering::Release);
    irq.config();
}

fn log_broken(label: &str, e: &super::QueueError) {
    crate::ewriteln!("janus: virtio {label}: the guest broke a queue ({e}); device needs reset");
}
