//! pocketlm: a per-render, thread-local budget for the size of the values a template builds.
//!
//! Templates from untrusted sources can build exponentially large values with a handful of
//! instructions (`{% set ns.s = ns.s ~ ns.s %}` in a loop), and a failed allocation aborts the
//! process.  Fuel bounds instructions, not sizes.  Inside [`with_budget`], every operation that
//! can build a value much larger than its inputs checks the size it is about to create against
//! what remains of the budget *before* allocating, and the values created are charged to it:
//!
//! * strings (`~`, `+`, `*`, filters, formatting), lists and maps built from owned data are
//!   charged when they become a [`Value`];
//! * a lazy concatenation (`+` on sequences, `|chain`) or repetition (`*`) is charged for the
//!   items it adds, so that repeated doubling runs out quickly even though nothing is copied;
//! * formatting a value (`~`, `|string`, `|join`, `{{ }}` of a list …) stops once the text
//!   would pass what remains, so a huge lazy list is never walked to its end;
//! * materializing a sequence (`|list`, `|sort`, iterating a string …) stops likewise.
//!
//! A refusal is an [`Error`] whose source is a [`BudgetExceeded`].  Where an operation cannot
//! fail (a conversion, a `Display`), it stops early and marks the budget as exceeded instead:
//! the VM fails the render at its next instruction, and [`exceeded`] reports it after the
//! render.  Without an active budget nothing is checked or charged.
//!
//! The accounting is cumulative (bytes created, not bytes alive) and approximate (a list item
//! counts as `size_of::<Value>()`, a map entry as two): it bounds what a render can allocate, it
//! does not measure it.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Weak};

use crate::error::{Error, ErrorKind};
use crate::value::argtypes::KwargsValues;
use crate::value::merge_object::{MergeDict, MergeSeq};
use crate::value::namespace_object::Namespace;
use crate::value::{DynObject, Value, ValueMap};

/// While a budget is active, lists, maps and merges nested deeper than this are refused when
/// they are built, and formatting a value nested deeper is refused: freeing, comparing,
/// formatting and serializing a value all recurse once per level, and a value nested tens of
/// thousands of levels deep (`{% set ns.l = [ns.l] %}` in a loop) would overflow the stack.
pub const MAX_DEPTH: usize = 100;

/// The size charged for one item of a list (one key or value of a map).
pub(crate) const ITEM_BYTES: usize = std::mem::size_of::<Value>();

/// Why a budgeted render was stopped: the source of the [`Error`] it fails with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetExceeded {
    /// The values created would pass the budget of `limit` bytes.
    Size {
        /// The budget given to [`with_budget`].
        limit: usize,
    },
    /// A value was nested deeper than [`MAX_DEPTH`] levels (when built or formatted), or a
    /// namespace was given a value holding a namespace.
    Depth,
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetExceeded::Size { limit } => write!(
                f,
                "the template's values exceed the value size limit of {limit} bytes"
            ),
            BudgetExceeded::Depth => write!(
                f,
                "a value is nested deeper than the limit of {MAX_DEPTH} levels"
            ),
        }
    }
}

impl std::error::Error for BudgetExceeded {}

impl From<BudgetExceeded> for Error {
    fn from(why: BudgetExceeded) -> Error {
        Error::new(ErrorKind::InvalidOperation, why.to_string()).with_source(why)
    }
}

#[derive(Clone, Copy)]
struct Budget {
    limit: usize,
    used: usize,
    tripped: Option<BudgetExceeded>,
}

thread_local! {
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
    /// How deep the current formatting of an object is (0: not formatting one).
    static FORMAT_DEPTH: Cell<usize> = const { Cell::new(0) };
    /// The namespaces created under the active budget.
    static NAMESPACES: RefCell<Vec<Weak<Namespace>>> = const { RefCell::new(Vec::new()) };
    /// The nesting of the containers seen under the active budget, by address (see [`nesting`]).
    static NESTING: RefCell<HashMap<usize, Known>> = RefCell::new(HashMap::new());
}

/// A container's [`Nesting`], with a reference to it that keeps its address from being reused
/// while the budget lasts.
struct Known {
    nesting: Nesting,
    _alive: DynObject,
}

/// How a value nests: the levels of lists, maps and merges (and namespaces) in it, 0 for a
/// scalar, and whether a namespace is among them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Nesting {
    pub depth: usize,
    pub namespace: bool,
}

impl Nesting {
    fn around(items: impl Iterator<Item = Nesting>) -> Nesting {
        let inner = items.fold(Nesting::default(), |a, b| Nesting {
            depth: a.depth.max(b.depth),
            namespace: a.namespace || b.namespace,
        });
        Nesting {
            depth: inner.depth.saturating_add(1),
            namespace: inner.namespace,
        }
    }
}

/// The nesting of `value`: one level for each list, map, lazy merge and namespace on the
/// deepest path through it.
///
/// Containers are immutable, so the nesting of each container built (or looked into) under the
/// active budget is remembered by address, and a container built from others costs one look-up
/// per item: building is linear however deep or shared the parts are.  Namespaces change, so
/// theirs is not remembered; they may not hold a namespace (see [`check_namespace_value`]), so a
/// container holding one is at most [`MAX_DEPTH`] levels deeper than it was when built.  Looking
/// into a value not seen before (the render's context) stops [`MAX_DEPTH`] levels down.
pub(crate) fn nesting(value: &Value) -> Nesting {
    nesting_at(value, 0)
}

fn nesting_at(value: &Value, level: usize) -> Nesting {
    let Some(obj) = value.as_object() else {
        return Nesting::default();
    };
    if let Some(known) = NESTING.with(|m| m.borrow().get(&obj.addr()).map(|k| k.nesting)) {
        return known;
    }
    if level > MAX_DEPTH {
        // Deeper than any value built under a budget: no need to look further.
        return Nesting {
            depth: 1,
            namespace: false,
        };
    }
    if let Some(ns) = obj.downcast_ref::<Namespace>() {
        let mut n = Nesting::around(ns.values().iter().map(|v| nesting_at(v, level + 1)));
        n.namespace = true;
        return n;
    }
    match container_nesting(obj, level) {
        Some(n) => {
            remember(obj, n);
            n
        }
        None => Nesting {
            depth: 1,
            namespace: false,
        },
    }
}

/// The nesting of a list, map or merge (`None` for other objects), from its items'.
fn container_nesting(obj: &DynObject, level: usize) -> Option<Nesting> {
    let at = |v: &Value| nesting_at(v, level + 1);
    if let Some(items) = obj.downcast_ref::<Vec<Value>>() {
        Some(Nesting::around(items.iter().map(at)))
    } else if let Some(map) = obj.downcast_ref::<ValueMap>() {
        Some(Nesting::around(map.iter().flat_map(|(k, v)| [at(k), at(v)])))
    } else if let Some(map) = obj.downcast_ref::<KwargsValues>() {
        Some(Nesting::around(map.iter().flat_map(|(k, v)| [at(k), at(v)])))
    } else if let Some(seq) = obj.downcast_ref::<MergeSeq>() {
        Some(Nesting::around(seq.parts().iter().map(at)))
    } else {
        obj.downcast_ref::<MergeDict>()
            .map(|dict| Nesting::around(dict.parts().iter().map(at)))
    }
}

fn remember(obj: &DynObject, nesting: Nesting) {
    if !active() {
        return;
    }
    // The record outlives the container until the budget ends: charged as three list items.
    charge_items(3);
    NESTING.with(|m| {
        m.borrow_mut().insert(
            obj.addr(),
            Known {
                nesting,
                _alive: obj.clone(),
            },
        )
    });
}

/// Called for every object that becomes a [`Value`]: under a budget, a list, map or merge
/// nested deeper than [`MAX_DEPTH`] marks the budget as exceeded (the render fails at its next
/// instruction), so that no value deep enough to overflow the stack when freed, compared or
/// formatted is ever built.
pub(crate) fn track_object(obj: &DynObject) {
    if !active() {
        return;
    }
    if let Some(n) = container_nesting(obj, 0) {
        remember(obj, n);
        if n.depth > MAX_DEPTH {
            trip(BudgetExceeded::Depth);
        }
    }
}

/// Checks a value about to be stored in a namespace: it may not hold a namespace (nor the
/// namespace itself), so that namespaces, the values a template can change, cannot be chained
/// deeper and deeper after their containers were built, and it may not nest past [`MAX_DEPTH`].
pub(crate) fn check_namespace_value(value: &Value) -> Result<(), Error> {
    if !active() {
        return Ok(());
    }
    let n = nesting(value);
    if n.namespace {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "a namespace cannot hold a namespace (directly or in a list or map)",
        )
        .with_source(trip(BudgetExceeded::Depth)));
    }
    if n.depth >= MAX_DEPTH {
        return Err(trip(BudgetExceeded::Depth));
    }
    Ok(())
}

/// Restores a thread-local cell when dropped (also when unwinding).
struct Restore<T: Copy + 'static>(&'static std::thread::LocalKey<Cell<T>>, T);

impl<T: Copy + 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        self.0.with(|c| c.set(self.1));
    }
}

/// Runs `f` with a fresh budget of `limit_bytes` for the values it creates on this thread
/// (typically one render).  A budget active outside is set aside for the call and restored.
///
/// The namespaces created in `f` are emptied when it returns: a namespace is the one value a
/// template can change, so it is the one through which it can make a reference cycle
/// (`{% set ns.me = ns %}`), which would otherwise leak what the namespace holds, up to the
/// whole budget, on every render.  (A value that outlives the render sees them empty.)
pub fn with_budget<R>(limit_bytes: usize, f: impl FnOnce() -> R) -> R {
    struct Namespaces(Vec<Weak<Namespace>>);

    impl Drop for Namespaces {
        fn drop(&mut self) {
            let created = NAMESPACES.with(|n| n.replace(std::mem::take(&mut self.0)));
            for ns in created.iter().filter_map(Weak::upgrade) {
                ns.clear();
            }
        }
    }

    let outer = BUDGET.with(|b| {
        b.replace(Some(Budget {
            limit: limit_bytes,
            used: 0,
            tripped: None,
        }))
    });
    let _restore = Restore(&BUDGET, outer);
    let _depth = Restore(&FORMAT_DEPTH, FORMAT_DEPTH.with(|d| d.replace(0)));
    let _namespaces = Namespaces(NAMESPACES.with(|n| n.take()));
    let _nesting = Nestings(NESTING.with(|n| n.take()));
    f()
}

/// Restores the nesting records of an outer budget, dropping this one's (and with them the
/// containers they kept alive) outside the borrow.
struct Nestings(HashMap<usize, Known>);

impl Drop for Nestings {
    fn drop(&mut self) {
        let ours = NESTING.with(|n| n.replace(std::mem::take(&mut self.0)));
        drop(ours);
    }
}

/// Registers a namespace created under the active budget (see [`with_budget`]), charged as four
/// list items: the record of it outlives the namespace until the budget ends.
pub(crate) fn track_namespace(ns: &Arc<Namespace>) {
    if active() {
        charge_items(4);
        NAMESPACES.with(|n| n.borrow_mut().push(Arc::downgrade(ns)));
    }
}

fn get() -> Option<Budget> {
    BUDGET.with(|b| b.get())
}

fn update(f: impl FnOnce(&mut Budget)) {
    BUDGET.with(|b| {
        if let Some(mut budget) = b.get() {
            f(&mut budget);
            b.set(Some(budget));
        }
    })
}

/// Whether a budget is active on this thread.
pub fn active() -> bool {
    get().is_some()
}

/// The bytes left in the active budget, `None` without one.
pub fn remaining() -> Option<usize> {
    get().map(|b| b.limit.saturating_sub(b.used))
}

/// The bytes charged so far to the active budget, `None` without one.
pub fn used() -> Option<usize> {
    get().map(|b| b.used)
}

/// Why the active budget stopped the render, if it did.
pub fn exceeded() -> Option<BudgetExceeded> {
    get().and_then(|b| b.tripped)
}

/// Marks the active budget as exceeded and returns the error for it.
pub(crate) fn trip(why: BudgetExceeded) -> Error {
    update(|b| {
        b.tripped.get_or_insert(why);
    });
    why.into()
}

fn size_exceeded() -> Error {
    let limit = get().map_or(0, |b| b.limit);
    trip(BudgetExceeded::Size { limit })
}

/// Checks that `n` more bytes fit in the active budget and charges them: for a value that is
/// created without passing through a charging constructor.
pub fn reserve(n: usize) -> Result<(), Error> {
    ok!(ensure(n));
    charge(n);
    Ok(())
}

/// Checks, without charging, that a value of `n` bytes would fit in the active budget: before
/// allocating a value that its constructor then charges.
pub fn ensure(n: usize) -> Result<(), Error> {
    match remaining() {
        Some(left) if n > left => Err(size_exceeded()),
        _ => Ok(()),
    }
}

/// [`ensure`] where the caller cannot fail: false (and the budget marked as exceeded) if `n`
/// bytes would not fit.
pub(crate) fn fits(n: usize) -> bool {
    ensure(n).is_ok()
}

/// [`ensure`] for `n` list items.
pub(crate) fn ensure_items(n: usize) -> Result<(), Error> {
    ensure(n.saturating_mul(ITEM_BYTES))
}

/// Charges `n` bytes already allocated; past the limit, marks the budget as exceeded.
pub fn charge(n: usize) {
    let mut over = false;
    update(|b| {
        b.used = b.used.saturating_add(n);
        over = b.used > b.limit;
    });
    if over {
        size_exceeded();
    }
}

/// Charges `n` list items.
pub(crate) fn charge_items(n: usize) {
    if active() {
        charge(n.saturating_mul(ITEM_BYTES));
    }
}

/// The error the render must fail with, once the budget was exceeded.
pub fn check() -> Result<(), Error> {
    match exceeded() {
        Some(why) => Err(why.into()),
        None => Ok(()),
    }
}

/// The capacity to add so that `len + additional` fit: doubling as a `Vec` does, but never past
/// `max` (what the budget allows), so that a collection refused at the budget has not
/// allocated twice that.  `None` if there is room.
fn grow_by(len: usize, capacity: usize, additional: usize, max: usize) -> Option<usize> {
    let need = len.saturating_add(additional);
    (need > capacity).then(|| capacity.saturating_mul(2).clamp(need, max.max(need)) - len)
}

/// Pushes `item` unless `rv` holds `max_items` already.
fn push_capped<T>(rv: &mut Vec<T>, item: T, max_items: usize) -> bool {
    if rv.len() >= max_items {
        return false;
    }
    if let Some(more) = grow_by(rv.len(), rv.capacity(), 1, max_items) {
        rv.reserve_exact(more);
    }
    rv.push(item);
    true
}

/// Collects `iter`, refusing to grow past what remains of the budget.  The caller's value
/// constructor charges the result.
pub(crate) fn try_collect<I: Iterator<Item = Value>>(iter: I) -> Result<Vec<Value>, Error> {
    let Some(left) = remaining() else {
        return Ok(iter.collect());
    };
    let max_items = left / ITEM_BYTES;
    let mut rv = Vec::new();
    for item in iter {
        if !push_capped(&mut rv, item, max_items) {
            return Err(size_exceeded());
        }
    }
    Ok(rv)
}

/// As [`try_collect`] where the caller cannot fail: stops early and marks the budget as exceeded.
pub(crate) fn collect_lossy<T, I: Iterator<Item = T>>(iter: I, bytes_per_item: usize) -> Vec<T> {
    let Some(left) = remaining() else {
        return iter.collect();
    };
    let max_items = left / bytes_per_item.max(1);
    let mut rv = Vec::new();
    for item in iter {
        if !push_capped(&mut rv, item, max_items) {
            size_exceeded();
            break;
        }
    }
    rv
}

/// A `fmt::Write` that refuses to write more than `left` bytes.
struct Bounded<W> {
    inner: W,
    left: usize,
    over: bool,
}

impl<W: fmt::Write> fmt::Write for Bounded<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if s.len() > self.left {
            self.over = true;
            return Err(fmt::Error);
        }
        self.left -= s.len();
        self.inner.write_str(s)
    }
}

/// The buffer of a [`BoundedString`]: grows to at most `max` bytes.
struct CappedString {
    buf: String,
    max: usize,
}

impl fmt::Write for CappedString {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(more) = grow_by(self.buf.len(), self.buf.capacity(), s.len(), self.max) {
            self.buf.reserve_exact(more);
        }
        self.buf.push_str(s);
        Ok(())
    }
}

/// A string built under the budget: writes past what remained when it was created fail.
pub struct BoundedString(Bounded<CappedString>);

impl BoundedString {
    /// An empty string that may grow to what remains of the budget (unbounded without one).
    pub fn new() -> BoundedString {
        let left = remaining().unwrap_or(usize::MAX);
        BoundedString(Bounded {
            inner: CappedString {
                buf: String::new(),
                max: left,
            },
            left,
            over: false,
        })
    }

    /// Appends `s`, or fails with the budget's error.
    pub fn push_str(&mut self, s: &str) -> Result<(), Error> {
        fmt::Write::write_str(&mut self.0, s).map_err(|_| size_exceeded())
    }

    /// Appends formatted text, or fails with the budget's error.
    pub fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> Result<(), Error> {
        match fmt::Write::write_fmt(&mut self.0, args) {
            Ok(()) => Ok(()),
            Err(_) if self.0.over => Err(size_exceeded()),
            Err(_) => Err(match exceeded() {
                Some(why) => why.into(),
                None => Error::new(ErrorKind::WriteFailure, "formatting failed"),
            }),
        }
    }

    /// The string, or the budget's error if formatting inside it was cut short.
    pub fn finish(self) -> Result<String, Error> {
        ok!(check());
        Ok(self.0.inner.buf)
    }
}

impl Default for BoundedString {
    fn default() -> Self {
        BoundedString::new()
    }
}

impl fmt::Write for BoundedString {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_str(s)
    }
}

/// Bytes written under the budget (for serializers): writes past what remained when it was
/// created fail.
pub struct BoundedBytes {
    buf: Vec<u8>,
    left: usize,
    over: bool,
}

impl BoundedBytes {
    /// An empty buffer that may grow to what remains of the budget (unbounded without one).
    pub fn new() -> BoundedBytes {
        BoundedBytes {
            buf: Vec::new(),
            left: remaining().unwrap_or(usize::MAX),
            over: false,
        }
    }

    /// The budget's error, if a write was refused (or formatting inside was cut short).
    pub fn exceeded(&self) -> Option<Error> {
        if self.over {
            return Some(size_exceeded());
        }
        exceeded().map(Error::from)
    }

    /// The bytes written, as text, or the budget's error.
    pub fn into_string(self) -> Result<String, Error> {
        if let Some(err) = self.exceeded() {
            return Err(err);
        }
        String::from_utf8(self.buf)
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
    }
}

impl Default for BoundedBytes {
    fn default() -> Self {
        BoundedBytes::new()
    }
}

impl std::io::Write for BoundedBytes {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if data.len() > self.left {
            self.over = true;
            return Err(std::io::Error::other("over the value budget"));
        }
        self.left -= data.len();
        let max = self.buf.len() + data.len() + self.left;
        if let Some(more) = grow_by(self.buf.len(), self.buf.capacity(), data.len(), max) {
            self.buf.reserve_exact(more);
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The buffer of an output capture (`{% set %}…{% endset %}`, a macro call, `{% filter %}`):
/// text a template writes in a loop grows it, so writes past what remains of the budget fail
/// (and the render with them).  It is charged once it becomes a value.
#[derive(Default)]
pub(crate) struct Capture(String);

impl Capture {
    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Write for Capture {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if ensure(self.0.len().saturating_add(s.len())).is_err() {
            return Err(fmt::Error);
        }
        self.0.push_str(s);
        Ok(())
    }
}

/// Formats `args` into a new string under the budget.
pub fn format(args: fmt::Arguments<'_>) -> Result<String, Error> {
    let mut rv = BoundedString::new();
    ok!(rv.write_fmt(args));
    rv.finish()
}

/// As [`format`] where the caller cannot fail: the text is cut short and the budget marked as
/// exceeded.
pub(crate) fn format_lossy(args: fmt::Arguments<'_>) -> String {
    let mut rv = BoundedString::new();
    let _ = rv.write_fmt(args);
    if rv.0.over {
        size_exceeded();
    }
    rv.0.inner.buf
}

/// Formats an object (`Display` and `Debug` of a [`Value`] both render it).  With a budget, the
/// outermost object formatted writes at most what remains of the budget and nesting stops at
/// [`MAX_DEPTH`]; past either, the text is cut short, the budget is marked as exceeded,
/// and `Ok` is returned so that `to_string()` does not panic.
pub(crate) fn fmt_object(obj: &DynObject, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let Some(left) = remaining() else {
        return obj.render(f);
    };
    let depth = FORMAT_DEPTH.with(|d| d.get());
    if depth >= MAX_DEPTH {
        trip(BudgetExceeded::Depth);
        return Err(fmt::Error);
    }
    let _depth = Restore(&FORMAT_DEPTH, depth);
    FORMAT_DEPTH.with(|d| d.set(depth + 1));
    if depth > 0 {
        // The outermost object's writer already counts these bytes.
        return obj.render(f);
    }
    let mut bounded = Bounded {
        inner: &mut *f,
        left,
        over: false,
    };
    let rv = fmt::write(&mut bounded, format_args!("{obj}"));
    if bounded.over {
        size_exceeded();
    }
    match rv {
        Err(_) if exceeded().is_some() => Ok(()),
        other => other,
    }
}
