//! A bounded reader for the pickles inside PyTorch archives (`data.pkl` of a `torch.save` zip
//! or a TorchScript archive).
//!
//! It runs no code: `GLOBAL` only names a callable, `REDUCE`/`NEWOBJ`/`BUILD` only record what
//! would have been called, and the caller decides what the tree means. Every object lives in one
//! arena and containers hold indices into it, so the memo shares entries instead of copying
//! them (a pickle that keeps re-reading its memo grows linearly, not exponentially), deep
//! nesting is built and dropped without recursion, and every count is checked against
//! [`Limits`] before it is used. Lengths in the stream are checked against the bytes that are
//! left, so no allocation is larger than the input.

use std::collections::HashMap;

/// What a pickle may use: it is refused past any of these.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Opcodes executed.
    pub ops: usize,
    /// Objects created (arena size).
    pub objects: usize,
    /// Memo entries.
    pub memo: usize,
    /// Entries on the stack (and marks) at once.
    pub stack: usize,
}

impl Default for Limits {
    /// Far above what real checkpoints use (a CLIP ViT-L state dict has ~2 000 objects per
    /// thousand tensors), far below what hurts.
    fn default() -> Self {
        Limits {
            ops: 20_000_000,
            objects: 5_000_000,
            memo: 5_000_000,
            stack: 1_000_000,
        }
    }
}

/// Why a pickle was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PickleError {
    /// The stream ended inside an opcode.
    #[error("the pickle ends early (at byte {0})")]
    Truncated(usize),
    /// An opcode this reader does not know (or refuses, such as `INST`/`OBJ`/`EXT`).
    #[error("unsupported pickle opcode 0x{op:02x} at byte {at}")]
    Opcode {
        /// The opcode.
        op: u8,
        /// Its offset.
        at: usize,
    },
    /// A limit of [`Limits`] was passed.
    #[error("the pickle passes the limit of {limit} {what}")]
    Limit {
        /// What was counted.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The stream is malformed (empty stack, missing mark, wrong container, bad memo index…).
    #[error("malformed pickle at byte {at}: {problem}")]
    Malformed {
        /// Offset of the opcode.
        at: usize,
        /// What is wrong.
        problem: String,
    },
    /// No `STOP` opcode.
    #[error("the pickle has no STOP opcode")]
    NoStop,
}

/// One object of the arena; containers hold [`Id`]s.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True`/`False`.
    Bool(bool),
    /// An integer (up to 64 bits; longer `LONG1` values are refused).
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Id>),
    /// A list.
    List(Vec<Id>),
    /// A dict, in insertion order.
    Dict(Vec<(Id, Id)>),
    /// A named callable (`GLOBAL`/`STACK_GLOBAL`), never resolved.
    Global {
        /// Module path.
        module: String,
        /// Attribute name.
        name: String,
    },
    /// `callable(*args)` as recorded by `REDUCE` or `NEWOBJ`.
    Call {
        /// The callable.
        callable: Id,
        /// The argument tuple.
        args: Id,
    },
    /// `obj.__setstate__(state)` as recorded by `BUILD`.
    Build {
        /// The object.
        object: Id,
        /// Its state.
        state: Id,
    },
    /// A persistent id (`BINPERSID`): a storage reference in PyTorch archives.
    Persistent(Id),
    /// The stack marker (never in a finished tree).
    Mark,
}

/// An index into [`Pickle::objects`].
pub type Id = usize;

/// A parsed pickle: the arena and the root object.
#[derive(Debug)]
pub struct Pickle {
    /// Every object created.
    pub objects: Vec<Value>,
    /// What `STOP` returned.
    pub root: Id,
}

impl Pickle {
    /// The object `id` (ids come from this pickle, so they are in range).
    pub fn get(&self, id: Id) -> &Value {
        &self.objects[id]
    }

    /// The string `id` holds, if it is one.
    pub fn str(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer `id` holds, if it is one.
    pub fn int(&self, id: Id) -> Option<i64> {
        match self.get(id) {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// The items of the tuple (or list) `id`.
    pub fn items(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// The entries of the dict `id`.
    pub fn dict(&self, id: Id) -> Option<&[(Id, Id)]> {
        match self.get(id) {
            Value::Dict(v) => Some(v),
            _ => None,
        }
    }

    /// The `(module, name)` of the global `id`.
    pub fn global(&self, id: Id) -> Option<(&str, &str)> {
        match self.get(id) {
            Value::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(PickleError::Truncated(self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A length from the stream, which must fit in what is left.
    fn len(&mut self, n: u64) -> Result<&'a [u8], PickleError> {
        let n = usize::try_from(n).map_err(|_| PickleError::Truncated(self.pos))?;
        self.take(n)
    }
    fn line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = &self.bytes[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated(self.bytes.len()))?;
        let line = &rest[..n];
        self.pos += n + 1;
        Ok(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

struct Machine {
    objects: Vec<Value>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
    limits: Limits,
    at: usize,
}

impl Machine {
    fn malformed(&self, problem: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            at: self.at,
            problem: problem.into(),
        }
    }
    fn new_object(&mut self, v: Value) -> Result<Id, PickleError> {
        if self.objects.len() >= self.limits.objects {
            return Err(PickleError::Limit {
                what: "objects",
                limit: self.limits.objects,
            });
        }
        self.objects.push(v);
        Ok(self.objects.len() - 1)
    }
    fn push_id(&mut self, id: Id) -> Result<(), PickleError> {
        if self.stack.len() >= self.limits.stack {
            return Err(PickleError::Limit {
                what: "stack entries",
                limit: self.limits.stack,
            });
        }
        self.stack.push(id);
        Ok(())
    }
    fn push(&mut self, v: Value) -> Result<(), PickleError> {
        let id = self.new_object(v)?;
        self.push_id(id)
    }
    fn pop(&mut self) -> Result<Id, PickleError> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.malformed("pop across a mark"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.malformed("the stack is empty"))
    }
    fn top(&self) -> Result<Id, PickleError> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.malformed("the stack is empty"))
    }
    fn pop_mark(&mut self) -> Result<Vec<Id>, PickleError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.malformed("no mark on the stack"))?;
        Ok(self.stack.split_off(m))
    }
    fn memo_get(&mut self, key: u64) -> Result<(), PickleError> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| self.malformed(format!("memo entry {key} was never stored")))?;
        self.push_id(id)
    }
    fn memo_put(&mut self, key: u64) -> Result<(), PickleError> {
        let id = self.top()?;
        if !self.memo.contains_key(&key) && self.memo.len() >= self.limits.memo {
            return Err(PickleError::Limit {
                what: "memo entries",
                limit: self.limits.memo,
            });
        }
        self.memo.insert(key, id);
        Ok(())
    }
    fn tuple(&mut self, n: usize) -> Result<(), PickleError> {
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.pop()?);
        }
        items.reverse();
        self.push(Value::Tuple(items))
    }
    fn container(&mut self) -> Result<&mut Value, PickleError> {
        let id = self.top()?;
        Ok(&mut self.objects[id])
    }
    fn extend_list(&mut self, items: Vec<Id>) -> Result<(), PickleError> {
        match self.container()? {
            Value::List(l) => {
                l.extend(items);
                Ok(())
            }
            _ => Err(self.malformed("APPEND to something that is not a list")),
        }
    }
    fn extend_dict(&mut self, items: Vec<Id>) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("an odd number of dict items"));
        }
        let pairs: Vec<(Id, Id)> = items.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        match self.container()? {
            Value::Dict(d) => {
                d.extend(pairs);
                Ok(())
            }
            _ => Err(self.malformed("SETITEM on something that is not a dict")),
        }
    }
    fn call(&mut self, callable: Id, args: Id) -> Result<(), PickleError> {
        // `OrderedDict()` is a dict: its items arrive by SETITEMS or BUILD.
        if let Value::Global { module, name } = &self.objects[callable]
            && module == "collections"
            && (name == "OrderedDict" || name == "defaultdict")
        {
            return self.push(Value::Dict(Vec::new()));
        }
        self.push(Value::Call { callable, args })
    }
}

fn utf8(bytes: &[u8], m: &Machine) -> Result<String, PickleError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| m.malformed("a string is not UTF-8"))
}

/// Parse a pickle held in memory, within `limits`.
pub fn parse(bytes: &[u8], limits: Limits) -> Result<Pickle, PickleError> {
    let mut r = Reader { bytes, pos: 0 };
    let mut m = Machine {
        objects: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        limits,
        at: 0,
    };
    let mut ops = 0usize;
    loop {
        if r.pos >= bytes.len() {
            return Err(PickleError::NoStop);
        }
        ops += 1;
        if ops > limits.ops {
            return Err(PickleError::Limit {
                what: "opcodes",
                limit: limits.ops,
            });
        }
        m.at = r.pos;
        let op = r.u8()?;
        match op {
            0x80 => {
                let v = r.u8()?;
                if v > 5 {
                    return Err(m.malformed(format!("protocol {v}")));
                }
            }
            0x95 => {
                // FRAME: a length hint only.
                r.u64()?;
            }
            b'c' => {
                let module = utf8(r.line()?, &m)?;
                let name = utf8(r.line()?, &m)?;
                m.push(Value::Global { module, name })?;
            }
            0x93 => {
                // STACK_GLOBAL
                let name = m.pop()?;
                let module = m.pop()?;
                let (Value::Str(module), Value::Str(name)) =
                    (m.objects[module].clone(), m.objects[name].clone())
                else {
                    return Err(m.malformed("STACK_GLOBAL needs two strings"));
                };
                m.push(Value::Global { module, name })?;
            }
            b'K' => {
                let v = r.u8()?;
                m.push(Value::Int(v.into()))?;
            }
            b'M' => {
                let v = r.u16()?;
                m.push(Value::Int(v.into()))?;
            }
            b'J' => {
                let v = r.u32()? as i32;
                m.push(Value::Int(v.into()))?;
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes.
                let n = r.u8()? as usize;
                if n > 8 {
                    return Err(m.malformed(format!("an integer of {n} bytes")));
                }
                let b = r.take(n)?;
                let mut v: i64 = 0;
                for (i, &byte) in b.iter().enumerate() {
                    v |= (byte as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                m.push(Value::Int(v))?;
            }
            b'G' => {
                let b = r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                m.push(Value::Float(f64::from_be_bytes(a)))?;
            }
            b'X' => {
                let n = r.u32()?;
                let s = utf8(r.len(n.into())?, &m)?;
                m.push(Value::Str(s))?;
            }
            0x8c => {
                let n = r.u8()?;
                let s = utf8(r.len(n.into())?, &m)?;
                m.push(Value::Str(s))?;
            }
            0x8d => {
                let n = r.u64()?;
                let s = utf8(r.len(n)?, &m)?;
                m.push(Value::Str(s))?;
            }
            b'B' => {
                let n = r.u32()?;
                let b = r.len(n.into())?.to_vec();
                m.push(Value::Bytes(b))?;
            }
            b'C' => {
                let n = r.u8()?;
                let b = r.len(n.into())?.to_vec();
                m.push(Value::Bytes(b))?;
            }
            b'N' => m.push(Value::None)?,
            0x88 => m.push(Value::Bool(true))?,
            0x89 => m.push(Value::Bool(false))?,
            b')' => m.push(Value::Tuple(Vec::new()))?,
            b']' => m.push(Value::List(Vec::new()))?,
            b'}' => m.push(Value::Dict(Vec::new()))?,
            b'(' => {
                if m.marks.len() >= limits.stack {
                    return Err(PickleError::Limit {
                        what: "stack entries",
                        limit: limits.stack,
                    });
                }
                m.marks.push(m.stack.len());
            }
            b't' => {
                let items = m.pop_mark()?;
                m.push(Value::Tuple(items))?;
            }
            b'l' => {
                let items = m.pop_mark()?;
                m.push(Value::List(items))?;
            }
            b'd' => {
                let items = m.pop_mark()?;
                if !items.len().is_multiple_of(2) {
                    return Err(m.malformed("an odd number of dict items"));
                }
                let pairs = items.chunks_exact(2).map(|p| (p[0], p[1])).collect();
                m.push(Value::Dict(pairs))?;
            }
            0x85 => m.tuple(1)?,
            0x86 => m.tuple(2)?,
            0x87 => m.tuple(3)?,
            b'a' => {
                let v = m.pop()?;
                m.extend_list(vec![v])?;
            }
            b'e' => {
                let items = m.pop_mark()?;
                m.extend_list(items)?;
            }
            b's' => {
                let v = m.pop()?;
                let k = m.pop()?;
                m.extend_dict(vec![k, v])?;
            }
            b'u' => {
                let items = m.pop_mark()?;
                m.extend_dict(items)?;
            }
            b'0' => {
                m.pop()?;
            }
            b'1' => {
                m.pop_mark()?;
            }
            b'2' => {
                let id = m.top()?;
                m.push_id(id)?;
            }
            b'h' => {
                let k = r.u8()?;
                m.memo_get(k.into())?;
            }
            b'j' => {
                let k = r.u32()?;
                m.memo_get(k.into())?;
            }
            b'q' => {
                let k = r.u8()?;
                m.memo_put(k.into())?;
            }
            b'r' => {
                let k = r.u32()?;
                m.memo_put(k.into())?;
            }
            0x94 => {
                // MEMOIZE: the next free index.
                let k = m.memo.len() as u64;
                m.memo_put(k)?;
            }
            b'Q' => {
                let id = m.pop()?;
                m.push(Value::Persistent(id))?;
            }
            b'R' | 0x81 => {
                let args = m.pop()?;
                let callable = m.pop()?;
                m.call(callable, args)?;
            }
            b'b' => {
                let state = m.pop()?;
                let object = m.pop()?;
                // An `OrderedDict` built from a dict state is that dict.
                if let (Value::Dict(_), Value::Dict(extra)) =
                    (&m.objects[object], &m.objects[state])
                {
                    let extra = extra.clone();
                    if let Value::Dict(d) = &mut m.objects[object] {
                        d.extend(extra);
                    }
                    m.push_id(object)?;
                } else {
                    m.push(Value::Build { object, state })?;
                }
            }
            b'.' => {
                let root = m.pop()?;
                return Ok(Pickle {
                    objects: m.objects,
                    root,
                });
            }
            other => {
                return Err(PickleError::Opcode {
                    op: other,
                    at: m.at,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pickle that keeps doubling a tuple through its memo (`t = (t, t)` twenty thousand
    /// times) stays linear: two ids per tuple.
    #[test]
    fn memo_reuse_is_shared_not_copied() {
        let mut p = vec![0x80, 2, b')', b'q', 0];
        for _ in 0..20_000 {
            p.extend_from_slice(&[b'h', 0, b'h', 0, 0x86, b'q', 0, b'0']);
        }
        p.extend_from_slice(&[b'h', 0, b'.']);
        let pk = parse(&p, Limits::default()).unwrap();
        assert_eq!(pk.objects.len(), 20_001);
        assert!(matches!(pk.get(pk.root), Value::Tuple(v) if v.len() == 2));
    }

    /// Two million nested tuples are built, counted against the limit and dropped without
    /// recursion.
    #[test]
    fn deep_nesting_needs_no_recursion() {
        let mut p = vec![0x80, 2, b')'];
        p.extend(std::iter::repeat_n(0x85, 2_000_000));
        p.push(b'.');
        let pk = parse(&p, Limits::default()).unwrap();
        assert_eq!(pk.objects.len(), 2_000_001);
        drop(pk);
        let small = Limits {
            objects: 1000,
            ..Limits::default()
        };
        assert_eq!(
            parse(&p, small).unwrap_err(),
            PickleError::Limit {
                what: "objects",
                limit: 1000
            }
        );
    }

    #[test]
    fn lengths_past_the_end_and_bad_streams_are_errors() {
        // BINUNICODE declaring 4 GiB with five bytes left.
        let p = [0x80, 2, b'X', 0xff, 0xff, 0xff, 0xff, b'a', b'b', b'.'];
        assert!(matches!(
            parse(&p, Limits::default()),
            Err(PickleError::Truncated(_))
        ));
        assert_eq!(
            parse(&[0x80, 2, b'N'], Limits::default()).unwrap_err(),
            PickleError::NoStop
        );
        assert!(matches!(
            parse(&[b'h', 7, b'.'], Limits::default()),
            Err(PickleError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"t.", Limits::default()),
            Err(PickleError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"Na.", Limits::default()),
            Err(PickleError::Malformed { .. })
        ));
        // `i` (INST) would name and call a class: refused.
        assert!(matches!(
            parse(b"(ios\nsystem\n.", Limits::default()),
            Err(PickleError::Opcode { op: b'i', .. })
        ));
        // A mark cannot be popped through by a plain pop.
        assert!(matches!(
            parse(&[b'N', b'(', 0x85, b'.'], Limits::default()),
            Err(PickleError::Malformed { .. })
        ));
    }

    #[test]
    fn ordered_dicts_and_negative_longs_read_as_python_does() {
        // collections.OrderedDict() then SETITEMS {"a": -2, "b": 300}
        let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)R(X\x01\x00\x00\x00a".to_vec();
        p.extend_from_slice(&[0x8a, 1, 0xfe]);
        p.extend_from_slice(b"X\x01\x00\x00\x00bM\x2c\x01u.");
        let pk = parse(&p, Limits::default()).unwrap();
        let d = pk.dict(pk.root).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(pk.str(d[0].0), Some("a"));
        assert_eq!(pk.int(d[0].1), Some(-2));
        assert_eq!(pk.int(d[1].1), Some(300));
    }
}
