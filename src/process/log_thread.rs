//! The log thread: log lines are formatted, redacted and written off the request path.
//!
//! On the thread that emits it, an event the filters let through is only captured: its
//! static callsite, the time, and its field values (numbers and booleans as they are,
//! strings copied, `Display` and `Debug` values rendered once) in one buffer. The capture
//! goes over a bounded queue to the log thread, which dispatches it again into a private
//! subscriber holding the formatter, so each line is what that formatter would have written
//! on the request thread, byte for byte, with the capture's time as its timestamp.
//!
//! Not lossy: when the queue is full, the emitter waits rather than drop a line (an audit
//! line is evidence). Lines leave in batches: the log thread flushes whenever its queue is
//! drained. The gate opens no `tracing` spans, so no span context is carried; an error
//! value recorded as `dyn Error` is written with its `Display` alone.

use std::fmt::{self, Write as _};
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use tracing::field::{display, DisplayValue, Field, Value, Visit};
use tracing::{Dispatch, Event, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// The most fields a callsite can declare (what `tracing`'s macros accept).
const MAX_FIELDS: usize = 32;

/// How long dropping the [`LogThreadGuard`] waits for the log thread to take the stop
/// request and then to write what is queued before it.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the log thread lets lines gather, once busy, before it looks at the queue again.
const LINGER: Duration = Duration::from_millis(1);

/// One field value of a captured event.
enum Captured {
    /// Recorded through `Debug` (`?`, `%`, the message): its rendering in the buffer.
    Shown(Range<u32>),
    /// A string, in the buffer.
    Str(Range<u32>),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Bool(bool),
}

/// An event captured on the thread that emitted it.
struct CapturedEvent {
    metadata: &'static Metadata<'static>,
    at: SystemTime,
    text: String,
    values: Vec<(Field, Captured)>,
}

// Holds rendered field values: never printed.
impl fmt::Debug for CapturedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapturedEvent")
            .field("target", &self.metadata.target())
            .finish_non_exhaustive()
    }
}

enum Message {
    Event(CapturedEvent),
    Stop(Sender<()>),
}

impl Visit for CapturedEvent {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let start = self.text.len();
        // Writing into a String does not fail.
        let _ = write!(self.text, "{value:?}");
        let range = span(start, self.text.len());
        self.values.push((field.clone(), Captured::Shown(range)));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let start = self.text.len();
        self.text.push_str(value);
        let range = span(start, self.text.len());
        self.values.push((field.clone(), Captured::Str(range)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.values.push((field.clone(), Captured::I64(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.values.push((field.clone(), Captured::U64(value)));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.values.push((field.clone(), Captured::I128(value)));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.values.push((field.clone(), Captured::U128(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.values.push((field.clone(), Captured::F64(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.values.push((field.clone(), Captured::Bool(value)));
    }
}

fn span(start: usize, end: usize) -> Range<u32> {
    // A log line is far below 4 GiB; saturate rather than wrap if one ever is not.
    let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    at(start)..at(end)
}

/// The capturing layer of the global subscriber: put it under the same filters the
/// formatter had.
#[derive(Debug)]
pub struct CaptureLayer {
    queue: Sender<Message>,
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let metadata = event.metadata();
        let mut captured = CapturedEvent {
            metadata,
            at: SystemTime::now(),
            text: String::with_capacity(256),
            values: Vec::with_capacity(metadata.fields().len()),
        };
        event.record(&mut captured);
        // Blocks while the queue is full; fails only once the log thread has stopped.
        let _ = self.queue.send(Message::Event(captured));
    }
}

/// Keeps the log thread running; dropping it writes every line queued before.
#[must_use = "logs stop when the guard is dropped"]
pub struct LogThreadGuard {
    queue: Sender<Message>,
}

impl fmt::Debug for LogThreadGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogThreadGuard").finish_non_exhaustive()
    }
}

impl Drop for LogThreadGuard {
    fn drop(&mut self) {
        let (done, stopped) = crossbeam_channel::bounded(1);
        if self
            .queue
            .send_timeout(Message::Stop(done), STOP_TIMEOUT)
            .is_ok()
        {
            let _ = stopped.recv_timeout(STOP_TIMEOUT);
        }
    }
}

/// Start the log thread. `formatter` is the layer that formats lines (its writer is the
/// log thread's own), `writer` what it writes to, flushed whenever the queue is drained;
/// `capacity` lines may wait in the queue.
pub fn start<L, W>(
    formatter: L,
    writer: Arc<Mutex<W>>,
    capacity: usize,
) -> io::Result<(CaptureLayer, LogThreadGuard)>
where
    L: Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
    W: io::Write + Send + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    let (queue, lines) = crossbeam_channel::bounded(capacity);
    let private = Dispatch::new(tracing_subscriber::registry().with(formatter));
    std::thread::Builder::new()
        .name("refresh-gate-log".into())
        .spawn(move || {
            tracing::dispatcher::with_default(&private, || write_lines(&lines, &writer))
        })?;
    Ok((
        CaptureLayer {
            queue: queue.clone(),
        },
        LogThreadGuard { queue },
    ))
}

/// The log thread's loop. It blocks on the queue only while the gate is quiet: once a line
/// came, it writes what is queued, flushes, and then looks again after [`LINGER`] instead of
/// waiting on the queue, so under load emitters hand lines over without waking it (a wake-up
/// per line cost more CPU than formatting the line). A quiet gate's lines are written at once.
fn write_lines<W: io::Write>(lines: &Receiver<Message>, writer: &Mutex<W>) {
    let flush = || {
        if let Ok(mut writer) = writer.lock() {
            let _ = writer.flush();
        }
    };
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        loop {
            while let Some(message) = next {
                match message {
                    Message::Event(event) => replay(&event),
                    Message::Stop(done) => {
                        flush();
                        let _ = done.send(());
                        return;
                    }
                }
                next = lines.try_recv().ok();
            }
            flush();
            std::thread::sleep(LINGER);
            match lines.try_recv() {
                Ok(message) => next = Some(message),
                Err(_) => break,
            }
        }
    }
}

thread_local! {
    /// The capture time of the event being formatted on the log thread.
    static EVENT_TIME: std::cell::Cell<Option<SystemTime>> = const { std::cell::Cell::new(None) };
}

/// Dispatch a captured event into the log thread's own subscriber (no allocation: the values
/// are lent from the capture).
fn replay(event: &CapturedEvent) {
    let text = |range: &Range<u32>| {
        event
            .text
            .get(range.start as usize..range.end as usize)
            .unwrap_or("")
    };
    let values = &event.values[..event.values.len().min(MAX_FIELDS)];
    let shown: [DisplayValue<&str>; MAX_FIELDS] = std::array::from_fn(|i| match values.get(i) {
        Some((_, Captured::Shown(range))) => display(text(range)),
        _ => display(""),
    });
    let strings: [&str; MAX_FIELDS] = std::array::from_fn(|i| match values.get(i) {
        Some((_, Captured::Str(range))) => text(range),
        _ => "",
    });
    let fields = event.metadata.fields();
    EVENT_TIME.with(|time| time.set(Some(event.at)));
    let Some(padding) = fields.iter().next() else {
        let none: [(&Field, Option<&dyn Value>); 0] = [];
        Event::dispatch(event.metadata, &fields.value_set(&none));
        return;
    };
    // `value_set` takes an array: the slots past the event's values are empty.
    let mut slots: [(&Field, Option<&dyn Value>); MAX_FIELDS] = [(&padding, None); MAX_FIELDS];
    for (i, (field, captured)) in values.iter().enumerate() {
        let value: &dyn Value = match captured {
            Captured::Shown(_) => &shown[i],
            Captured::Str(_) => &strings[i],
            Captured::I64(v) => v,
            Captured::U64(v) => v,
            Captured::I128(v) => v,
            Captured::U128(v) => v,
            Captured::F64(v) => v,
            Captured::Bool(v) => v,
        };
        slots[i] = (field, Some(value));
    }
    Event::dispatch(event.metadata, &fields.value_set(&slots));
}

/// The formatter's timestamp on the log thread: when the event was captured, written as
/// `tracing-subscriber`'s own `SystemTime` timer writes the current time (RFC 3339, UTC,
/// microseconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureTime;

impl FormatTime for CaptureTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let at = EVENT_TIME
            .with(std::cell::Cell::get)
            .unwrap_or_else(SystemTime::now);
        write!(w, "{}", humantime::format_rfc3339_micros(at))
    }
}

/// The [`MakeWriter`] of the log thread's formatter: its shared writer, one line per write.
#[derive(Debug)]
pub struct SharedWriter<W>(pub Arc<Mutex<W>>);

impl<'a, W: io::Write + 'a> MakeWriter<'a> for SharedWriter<W> {
    type Writer = SharedWriterGuard<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        SharedWriterGuard(
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

/// One line's hold on the [`SharedWriter`].
pub struct SharedWriterGuard<'a, W>(std::sync::MutexGuard<'a, W>);

impl<W: io::Write> io::Write for SharedWriterGuard<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Registry;

    type Buffer = Arc<Mutex<Vec<u8>>>;
    type Formatter = Box<dyn Layer<Registry> + Send + Sync>;

    fn text(buffer: &Buffer) -> String {
        String::from_utf8(buffer.lock().unwrap().clone()).unwrap()
    }

    /// Every kind of field value, a formatted message, and a `log` record (as Pingora's).
    fn emit() {
        let address: std::net::IpAddr = [192, 0, 2, 7].into();
        tracing::info!(
            target: "audit",
            schema_version = 1u32,
            ts = %"2026-12-07T12:00:00.000Z",
            event = "ExpiredRefreshTokenUsed",
            client_ip = %address,
            subject = "alice \"quoted\"\n",
            since_first_use_ms = 42u64,
            delta = -7i64,
            big = u128::MAX,
            ratio = 0.25f64,
            coalesced = true,
            reason = ?Some("grace_expired"),
            "[{}] - {} - {}", "ExpiredRefreshTokenUsed", "/token", address
        );
        tracing::warn!(target: "refresh_gate::store", error = %"timed out", "store unavailable");
        tracing::error!("no fields but the message");
        tracing_log::format_trace(
            &log::Record::builder()
                .args(format_args!("Fail to proxy: {}", "GET /cb?code=x"))
                .level(log::Level::Error)
                .target("pingora_proxy")
                .module_path(Some("pingora_proxy::lib"))
                .file(Some("src/lib.rs"))
                .line(Some(7))
                .build(),
        )
        .unwrap();
    }

    fn formatter(json: bool, buffer: &Buffer) -> Formatter {
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_writer(SharedWriter(buffer.clone()));
        if json {
            layer.json().flatten_event(true).boxed()
        } else {
            layer.boxed()
        }
    }

    fn written_directly(json: bool) -> String {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(formatter(json, &buffer));
        tracing::subscriber::with_default(subscriber, emit);
        text(&buffer)
    }

    fn written_by_the_log_thread(json: bool, capacity: usize, emit: fn()) -> String {
        let buffer = Buffer::default();
        let (capture, guard) = start(formatter(json, &buffer), buffer.clone(), capacity).unwrap();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(capture), emit);
        drop(guard);
        text(&buffer)
    }

    #[test]
    fn plain_lines_are_what_the_formatter_writes_on_the_emitting_thread() {
        let direct = written_directly(false);
        assert_eq!(direct.lines().count(), 4, "{direct}");
        assert!(direct.contains("pingora_proxy"), "{direct}");
        assert_eq!(written_by_the_log_thread(false, 4, emit), direct);
    }

    #[test]
    fn json_lines_are_what_the_formatter_writes_on_the_emitting_thread() {
        let direct = written_directly(true);
        assert_eq!(direct.lines().count(), 4, "{direct}");
        assert_eq!(written_by_the_log_thread(true, 4, emit), direct);
    }

    #[test]
    fn a_full_queue_makes_the_emitter_wait_and_loses_no_line() {
        fn flood() {
            for n in 0..5_000u32 {
                tracing::info!(target: "audit", n, "line");
            }
        }
        let written = written_by_the_log_thread(false, 1, flood);
        let numbers: Vec<u32> = written
            .lines()
            .map(|line| line.split("n=").nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(numbers, (0..5_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_quiet_emitters_line_is_written_without_waiting_for_more() {
        let buffer = Buffer::default();
        let (capture, _guard) = start(formatter(false, &buffer), buffer.clone(), 4).unwrap();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(capture), || {
            tracing::info!(target: "audit", "alone");
        });
        // The guard stays alive: the log thread itself must write and flush the line.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !text(&buffer).contains("alone") {
            assert!(
                std::time::Instant::now() < deadline,
                "the line was not written"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_timestamp_is_the_capture_time_in_the_formatters_own_shape() {
        let mut own = String::new();
        tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut Writer::new(&mut own))
            .unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_644_800_123_456);
        EVENT_TIME.with(|time| time.set(Some(at)));
        let mut ours = String::new();
        CaptureTime
            .format_time(&mut Writer::new(&mut ours))
            .unwrap();
        EVENT_TIME.with(|time| time.set(None));
        assert_eq!(ours, "2026-12-07T12:00:00.123456Z");
        assert_eq!(own.len(), ours.len(), "{own} / {ours}");
        for (a, b) in own.chars().zip(ours.chars()) {
            assert_eq!(a.is_ascii_digit(), b.is_ascii_digit(), "{own} / {ours}");
        }
    }

    #[test]
    fn a_captured_event_does_not_show_its_values() {
        use tracing::callsite::Callsite;
        let callsite = tracing::callsite!(
            name: "test",
            kind: tracing::metadata::Kind::EVENT,
            fields: secret
        );
        let captured = CapturedEvent {
            metadata: callsite.metadata(),
            at: SystemTime::now(),
            text: "s3cr3t".into(),
            values: Vec::new(),
        };
        assert!(!format!("{captured:?}").contains("s3cr3t"));
    }
}
