//! Rule expressions: CEL syntax, compiled once to a numeric evaluator.
//!
//! Expressions (`long_entry`, `stop_loss`, gate conditions, scanner filters, …) are parsed by
//! the `cel` crate (the Common Expression Language of Kubernetes validation rules and
//! Envoy), then compiled here into a small typed tree over indicator slots. Rules run on
//! every bar of every symbol, and the general CEL interpreter costs about half a
//! microsecond per evaluation of a three-clause condition on this machine, which alone
//! would cap a backtest near one million bars per second; the compiled tree evaluates the
//! same condition in a few nanoseconds. A differential test checks that both agree.
//!
//! The subset rules may use:
//! - numbers (every number is a double: `2 * atr_14` is fine) and booleans;
//! - `+ - * /`, unary `-`, `< <= > >= == !=`, `&& || !`, `cond ? a : b`, parentheses;
//! - identifiers: bar fields (`open`, `high`, `low`, `close`, `volume`), indicator outputs
//!   (`sma_50`, `macd_signal`, `bb_upper`, …) and, where the context defines them, extra
//!   names such as `entry_price`; another timeframe's value as `d1.sma_200` (prefixes `m1`,
//!   `m5`, `m15`, `m30`, `h1`, `h4`, `d1`, `w1`);
//! - `prev(x)`: `x` on the previous bar; `crossed_above(a, b)`: `a` was at or below `b` on
//!   the previous bar and is above it now; `crossed_below(a, b)`: the mirror;
//!   `abs(x)`, `min(a, b, …)`, `max(a, b, …)`.
//!
//! A value that is not yet defined (inside an indicator's lookback, or the previous bar of
//! the first bar) makes the whole expression undefined: a condition is then not met and a
//! level is not available, rather than `!(rsi_14 > 70)` being true during warm-up.

use crate::market::Timeframe;
use cel::common::ast::{Expr, IdedExpr, LiteralValue, SourceInfo, operators};

/// The type of an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// A double.
    Number,
    /// A boolean.
    Bool,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Number => "a number",
            Ty::Bool => "a condition (true or false)",
        }
    }
}

/// A problem in an expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprError {
    /// Finding code: `cel-syntax`, `too-deep`, `unknown-identifier`,
    /// `indicator-not-provided`, `unknown-function`, `unsupported-expression` or
    /// `wrong-type`.
    pub code: &'static str,
    /// Character offset in the expression.
    pub offset: usize,
    /// What, for a person.
    pub message: String,
}

/// How a context resolves a name read by an expression.
pub enum Resolution {
    /// The value lives in this slot.
    Slot(u32),
    /// The name is not defined; the finding code and message say why.
    Unknown(&'static str, String),
}

/// Maps the names an expression reads to value slots.
pub trait Resolver {
    /// Resolves `name` on `timeframe` (`None`: the expression's own timeframe).
    fn resolve(&mut self, timeframe: Option<Timeframe>, name: &str) -> Resolution;
}

impl<F: FnMut(Option<Timeframe>, &str) -> Resolution> Resolver for F {
    fn resolve(&mut self, timeframe: Option<Timeframe>, name: &str) -> Resolution {
        self(timeframe, name)
    }
}

/// Current and previous values of slots, for evaluation.
pub trait Values {
    /// The value of `slot` on the current bar (`NaN` when undefined).
    fn current(&self, slot: u32) -> f64;
    /// The value of `slot` on the previous bar (`NaN` when undefined).
    fn previous(&self, slot: u32) -> f64;
}

/// A plain slice is a set of values without history.
impl Values for [f64] {
    fn current(&self, slot: u32) -> f64 {
        self.get(slot as usize).copied().unwrap_or(f64::NAN)
    }
    fn previous(&self, _slot: u32) -> f64 {
        f64::NAN
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Clone, Debug)]
enum Node {
    Num(f64),
    Bool(bool),
    Cur(u32),
    Prev(u32),
    Neg(Box<Node>),
    Not(Box<Node>),
    Arith(Arith, Box<Node>, Box<Node>),
    Cmp(Cmp, Box<Node>, Box<Node>),
    BoolEq(bool, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Abs(Box<Node>),
    Min(Vec<Node>),
    Max(Vec<Node>),
}

/// A compiled expression.
#[derive(Clone, Debug)]
pub struct Program {
    root: Node,
    ty: Ty,
    /// Slots read on the current bar.
    current: Vec<u32>,
    /// Slots read on the previous bar.
    previous: Vec<u32>,
    source: String,
}

impl Program {
    /// The expression's type.
    pub fn ty(&self) -> Ty {
        self.ty
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Slots read on the current bar, and on the previous one.
    pub fn reads(&self) -> (&[u32], &[u32]) {
        (&self.current, &self.previous)
    }

    fn defined<V: Values + ?Sized>(&self, v: &V) -> bool {
        self.current.iter().all(|s| v.current(*s).is_finite())
            && self.previous.iter().all(|s| v.previous(*s).is_finite())
    }

    /// Evaluates a condition: `None` when a value it reads is undefined.
    pub fn eval_bool<V: Values + ?Sized>(&self, v: &V) -> Option<bool> {
        if !self.defined(v) {
            return None;
        }
        match self.ty {
            Ty::Bool => Some(truth(&self.root, v)),
            Ty::Number => None,
        }
    }

    /// Evaluates a number: `None` when a value it reads is undefined or the result is not
    /// finite (a division by zero).
    pub fn eval_number<V: Values + ?Sized>(&self, v: &V) -> Option<f64> {
        if !self.defined(v) {
            return None;
        }
        match self.ty {
            Ty::Number => Some(number(&self.root, v)).filter(|x| x.is_finite()),
            Ty::Bool => None,
        }
    }
}

fn number<V: Values + ?Sized>(n: &Node, v: &V) -> f64 {
    match n {
        Node::Num(x) => *x,
        Node::Cur(s) => v.current(*s),
        Node::Prev(s) => v.previous(*s),
        Node::Neg(a) => -number(a, v),
        Node::Arith(op, a, b) => {
            let (a, b) = (number(a, v), number(b, v));
            match op {
                Arith::Add => a + b,
                Arith::Sub => a - b,
                Arith::Mul => a * b,
                Arith::Div => a / b,
            }
        }
        Node::Cond(c, a, b) => {
            if truth(c, v) {
                number(a, v)
            } else {
                number(b, v)
            }
        }
        Node::Abs(a) => number(a, v).abs(),
        Node::Min(items) => items
            .iter()
            .map(|i| number(i, v))
            .fold(f64::INFINITY, f64::min),
        Node::Max(items) => items
            .iter()
            .map(|i| number(i, v))
            .fold(f64::NEG_INFINITY, f64::max),
        _ => f64::NAN,
    }
}

fn truth<V: Values + ?Sized>(n: &Node, v: &V) -> bool {
    match n {
        Node::Bool(b) => *b,
        Node::Not(a) => !truth(a, v),
        Node::And(a, b) => truth(a, v) && truth(b, v),
        Node::Or(a, b) => truth(a, v) || truth(b, v),
        Node::Cmp(op, a, b) => {
            let (a, b) = (number(a, v), number(b, v));
            match op {
                Cmp::Lt => a < b,
                Cmp::Le => a <= b,
                Cmp::Gt => a > b,
                Cmp::Ge => a >= b,
                Cmp::Eq => a == b,
                Cmp::Ne => a != b,
            }
        }
        Node::BoolEq(eq, a, b) => (truth(a, v) == truth(b, v)) == *eq,
        Node::Cond(c, a, b) => {
            if truth(c, v) {
                truth(a, v)
            } else {
                truth(b, v)
            }
        }
        _ => false,
    }
}

/// The functions rules may call.
pub const FUNCTIONS: [&str; 6] = [
    "prev",
    "crossed_above",
    "crossed_below",
    "abs",
    "min",
    "max",
];

/// Most levels an expression may nest: brackets, operators, calls and member selections,
/// counted as in [`nesting_overflow`]. Parsing, compiling and evaluating walk the tree
/// recursively, so a deeper expression is refused (`too-deep`) before it is parsed.
pub const MAX_EXPR_DEPTH: usize = crate::config::MAX_DEPTH;

/// Where `source` nests deeper than [`MAX_EXPR_DEPTH`], as a character offset, found
/// without parsing: every open bracket counts one level, and so does every operator, dot
/// or `?` inside the brackets that are open at that point (a chain of `n` operators can
/// make a tree `n` deep). String literals are skipped. Real rules stay far below the limit.
pub fn nesting_overflow(source: &str) -> Option<usize> {
    measure(source).overflow
}

/// How an expression nests, measured without parsing.
struct Nesting {
    /// Where it first nests deeper than [`MAX_EXPR_DEPTH`] (see [`nesting_overflow`]).
    overflow: Option<usize>,
    /// The deepest the parser recurses, in levels: open brackets and `?` (a conditional's
    /// branches nest), counted to where the measure stopped.
    parser_levels: usize,
}

fn measure(source: &str) -> Nesting {
    let chars: Vec<char> = source.chars().collect();
    let mut brackets = 0usize;
    let mut conditionals = 0usize;
    let mut parser_levels = 0usize;
    // Operators seen at each open bracket level (the outermost first).
    let mut ops: Vec<usize> = vec![0];
    let mut total = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' => {
                // Skip a string literal (''' and """ too), honouring escapes.
                let triple = i + 2 < chars.len() && chars[i + 1] == c && chars[i + 2] == c;
                let width = if triple { 3 } else { 1 };
                i += width;
                while i < chars.len() {
                    if chars[i] == '\\' {
                        i += 2;
                        continue;
                    }
                    if chars[i] == c
                        && (!triple
                            || (i + 2 < chars.len() && chars[i + 1] == c && chars[i + 2] == c))
                    {
                        i += width;
                        break;
                    }
                    i += 1;
                }
                continue;
            }
            '(' | '[' | '{' => {
                ops.push(0);
                total += 1;
                brackets += 1;
            }
            ')' | ']' | '}' if ops.len() > 1 => {
                total -= 1 + ops.pop().unwrap_or(0);
                brackets -= 1;
            }
            '+' | '-' | '*' | '/' | '%' | '<' | '>' | '=' | '!' | '&' | '|' | '?' | ':' | '.' => {
                // Two-character operators (`<=`, `&&`, `==`, …) count once.
                let pair = i + 1 < chars.len()
                    && matches!(
                        (c, chars[i + 1]),
                        ('<', '=') | ('>', '=') | ('=', '=') | ('!', '=') | ('&', '&') | ('|', '|')
                    );
                let digit_dot = c == '.'
                    && (i > 0 && chars[i - 1].is_ascii_digit()
                        || i + 1 < chars.len() && chars[i + 1].is_ascii_digit());
                if !digit_dot {
                    if let Some(top) = ops.last_mut() {
                        *top += 1;
                    }
                    total += 1;
                }
                if c == '?' {
                    conditionals += 1;
                }
                if pair {
                    i += 1;
                }
            }
            _ => {}
        }
        parser_levels = parser_levels.max(brackets + conditionals);
        if total > MAX_EXPR_DEPTH {
            return Nesting {
                overflow: Some(i),
                parser_levels,
            };
        }
        i += 1;
    }
    Nesting {
        overflow: None,
        parser_levels,
    }
}

fn too_deep(offset: usize) -> ExprError {
    ExprError {
        code: "too-deep",
        offset,
        message: format!(
            "the expression nests more than {MAX_EXPR_DEPTH} levels (brackets and operators) here; split it or simplify it"
        ),
    }
}

/// Stack of the threads deep expressions are parsed on. The generated CEL parser recurses
/// through about ten grammar rules per level of brackets, with large frames: about 150 KiB
/// per level in a debug build, so that 14 levels overflow the 2 MiB stack of a Tokio thread.
/// On these threads the parser's own limit of 96 levels is safe wherever `compile` is
/// called. The stack is virtual memory: only the pages a parse touches are used.
const PARSER_STACK_BYTES: usize = 64 << 20;

/// Expressions that nest at most this many levels (brackets and conditionals) are parsed
/// on the calling thread: almost every rule, at no cost. Deeper ones go to the parser
/// threads.
const INLINE_PARSER_LEVELS: usize = 4;

type Parsed = Result<(IdedExpr, SourceInfo), Vec<ExprError>>;

/// A parse request for the parser threads.
struct Job {
    source: String,
    reply: std::sync::mpsc::Sender<Parsed>,
}

/// The parser threads, started on the first deep expression: one per core (at most four),
/// sharing one queue.
fn parser_threads() -> Option<&'static std::sync::Mutex<std::sync::mpsc::Sender<Job>>> {
    use std::sync::{Arc, Mutex, OnceLock, mpsc};
    static THREADS: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();
    THREADS
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            let n = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
            let mut started = 0;
            for i in 0..n {
                let rx = Arc::clone(&rx);
                let spawned = std::thread::Builder::new()
                    .name(format!("cel-parse-{i}"))
                    .stack_size(PARSER_STACK_BYTES)
                    .spawn(move || {
                        loop {
                            let job = match rx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(_) => return,
                            };
                            let Ok(job) = job else { return };
                            let _ = job.reply.send(parse_cel(&job.source));
                        }
                    });
                if spawned.is_ok() {
                    started += 1;
                }
            }
            (started > 0).then(|| Mutex::new(tx))
        })
        .as_ref()
}

fn parse_failed(why: &str) -> Vec<ExprError> {
    vec![ExprError {
        code: "cel-syntax",
        offset: 0,
        message: format!("the expression could not be parsed: {why}"),
    }]
}

/// Parses `source` with the CEL grammar, refusing it first when it nests too deep; a
/// deep expression is parsed on a parser thread (see [`PARSER_STACK_BYTES`]).
fn parse(source: &str) -> Parsed {
    let nesting = measure(source);
    if let Some(offset) = nesting.overflow {
        return Err(vec![too_deep(offset)]);
    }
    if nesting.parser_levels <= INLINE_PARSER_LEVELS {
        return parse_cel(source);
    }
    let Some(threads) = parser_threads() else {
        return Err(parse_failed("no thread to parse it on"));
    };
    let (reply, answer) = std::sync::mpsc::channel();
    let job = Job {
        source: source.to_string(),
        reply,
    };
    let sent = match threads.lock() {
        Ok(tx) => tx.send(job).is_ok(),
        Err(_) => false,
    };
    if !sent {
        return Err(parse_failed("the parser threads stopped"));
    }
    answer
        .recv()
        .unwrap_or_else(|_| Err(parse_failed("the parser failed")))
}

/// The CEL parse itself (see [`parse`]).
fn parse_cel(source: &str) -> Parsed {
    let parser = cel::parser::Parser::new();
    parser
        .parse_with_source_info(source)
        .map_err(|errors| {
            let lines: Vec<&str> = source.split('\n').collect();
            errors
                .errors
                .iter()
                .map(|e| {
                    // The cel crate reports 1-based lines and columns.
                    let (line, col) = (e.pos.0.max(1) as usize, (e.pos.1.max(1) - 1) as usize);
                    let offset = lines
                        .iter()
                        .take(line - 1)
                        .map(|l| l.chars().count() + 1)
                        .sum::<usize>()
                        + col;
                    let offset = offset.min(source.chars().count());
                    if e.msg.contains("Recursion limit") {
                        // The parser's own bound on nested brackets (96).
                        too_deep(offset)
                    } else {
                        ExprError {
                            code: "cel-syntax",
                            offset,
                            message: format!("syntax error: {}", e.msg),
                        }
                    }
                })
                .collect::<Vec<_>>()
        })
        .map_err(|errors| {
            // Past the recursion limit the parser's other complaints are noise.
            match errors.iter().find(|e| e.code == "too-deep") {
                Some(deep) => vec![deep.clone()],
                None => errors,
            }
        })
}

/// Compiles `source`, which must have type `want`, resolving names with `resolver`.
/// Collects every error.
pub fn compile(
    source: &str,
    want: Ty,
    resolver: &mut dyn Resolver,
) -> Result<Program, Vec<ExprError>> {
    let (ast, info) = parse(source)?;
    let mut c = Compiler {
        source,
        info: &info,
        resolver,
        errors: Vec::new(),
        current: Vec::new(),
        previous: Vec::new(),
    };
    let typed = c.expr(&ast, false);
    if let Some((_, ty)) = &typed
        && *ty != want
    {
        c.errors.push(ExprError {
            code: "wrong-type",
            offset: 0,
            message: format!(
                "this expression gives {} but {} is needed here",
                ty.name(),
                want.name()
            ),
        });
    }
    if !c.errors.is_empty() {
        c.errors.sort_by_key(|e| e.offset);
        return Err(c.errors);
    }
    let Some((root, ty)) = typed else {
        return Err(vec![ExprError {
            code: "unsupported-expression",
            offset: 0,
            message: "the expression cannot be evaluated".into(),
        }]);
    };
    let mut current = c.current;
    let mut previous = c.previous;
    current.sort_unstable();
    current.dedup();
    previous.sort_unstable();
    previous.dedup();
    Ok(Program {
        root,
        ty,
        current,
        previous,
        source: source.to_string(),
    })
}

struct Compiler<'a> {
    source: &'a str,
    info: &'a SourceInfo,
    resolver: &'a mut dyn Resolver,
    errors: Vec<ExprError>,
    current: Vec<u32>,
    previous: Vec<u32>,
}

impl Compiler<'_> {
    /// Character offset of `e`; for a call, of the function's name rather than its `(`.
    fn offset(&self, e: &IdedExpr) -> usize {
        let start = self
            .info
            .offset_for(e.id)
            .map_or(0, |(start, _)| start as usize);
        if let Expr::Call(call) = &e.expr {
            let n = call.func_name.chars().count();
            if start >= n {
                let before: String = self.source.chars().skip(start - n).take(n).collect();
                if before == call.func_name {
                    return start - n;
                }
            }
        }
        start
    }

    fn fail(&mut self, e: &IdedExpr, code: &'static str, message: String) -> Option<(Node, Ty)> {
        let offset = self.offset(e);
        self.errors.push(ExprError {
            code,
            offset,
            message,
        });
        None
    }

    fn var(
        &mut self,
        e: &IdedExpr,
        tf: Option<Timeframe>,
        name: &str,
        prev: bool,
    ) -> Option<(Node, Ty)> {
        match self.resolver.resolve(tf, name) {
            Resolution::Slot(s) => {
                if prev {
                    self.previous.push(s);
                    Some((Node::Prev(s), Ty::Number))
                } else {
                    self.current.push(s);
                    Some((Node::Cur(s), Ty::Number))
                }
            }
            Resolution::Unknown(code, message) => self.fail(e, code, message),
        }
    }

    fn expect(&mut self, e: &IdedExpr, prev: bool, want: Ty, role: &str) -> Option<Node> {
        let (node, ty) = self.expr(e, prev)?;
        if ty != want {
            self.fail(
                e,
                "wrong-type",
                format!("{role} must be {}, found {}", want.name(), ty.name()),
            );
            return None;
        }
        Some(node)
    }

    fn expr(&mut self, e: &IdedExpr, prev: bool) -> Option<(Node, Ty)> {
        match &e.expr {
            Expr::Literal(LiteralValue::Double(d)) => Some((Node::Num(f64::from(*d)), Ty::Number)),
            Expr::Literal(LiteralValue::Int(i)) => Some((Node::Num(i64::from(*i) as f64), Ty::Number)),
            Expr::Literal(LiteralValue::UInt(u)) => Some((Node::Num(u64::from(*u) as f64), Ty::Number)),
            Expr::Literal(LiteralValue::Boolean(b)) => Some((Node::Bool(bool::from(*b)), Ty::Bool)),
            Expr::Literal(LiteralValue::String(_)) => {
                self.fail(e, "unsupported-expression", "strings are not supported in rules; compare numbers".into())
            }
            Expr::Literal(_) => self.fail(e, "unsupported-expression", "only numbers and booleans are supported in rules".into()),
            Expr::Ident(name) => {
                if Timeframe::from_expr_prefix(name).is_some() {
                    return self.fail(e, "unknown-identifier", format!("'{name}' names a timeframe; read a value from it, as in {name}.close"));
                }
                self.var(e, None, name, prev)
            }
            Expr::Select(sel) if !sel.test => match &sel.operand.expr {
                Expr::Ident(prefix) => match Timeframe::from_expr_prefix(prefix) {
                    Some(tf) => self.var(e, Some(tf), &sel.field, prev),
                    None => self.fail(
                        e,
                        "unknown-identifier",
                        format!("unknown timeframe prefix '{prefix}' (use m1, m5, m15, m30, h1, h4, d1 or w1, as in d1.sma_200)"),
                    ),
                },
                _ => self.fail(e, "unsupported-expression", "field selection is only for timeframes, as in d1.sma_200".into()),
            },
            Expr::Call(call) => {
                if call.target.is_some() {
                    return self.fail(e, "unknown-function", format!("'{}' is not a function rules can call as a method", call.func_name));
                }
                self.call(e, &call.func_name, &call.args, prev)
            }
            Expr::Comprehension(_) => self.fail(e, "unsupported-expression", "macros such as has(), all() and exists() are not supported in rules".into()),
            Expr::List(_) | Expr::Map(_) | Expr::Struct(_) => {
                self.fail(e, "unsupported-expression", "lists, maps and messages are not supported in rules".into())
            }
            Expr::Select(_) | Expr::Unspecified => self.fail(e, "unsupported-expression", "this construct is not supported in rules".into()),
        }
    }

    fn call(
        &mut self,
        e: &IdedExpr,
        name: &str,
        args: &[IdedExpr],
        prev: bool,
    ) -> Option<(Node, Ty)> {
        let arith = |op| Some(op);
        let arith_op = match name {
            operators::ADD => arith(Arith::Add),
            operators::SUBSTRACT => arith(Arith::Sub),
            operators::MULTIPLY => arith(Arith::Mul),
            operators::DIVIDE => arith(Arith::Div),
            _ => None,
        };
        if let (Some(op), [a, b]) = (arith_op, args) {
            let a = self.expect(a, prev, Ty::Number, "an operand of arithmetic");
            let b = self.expect(b, prev, Ty::Number, "an operand of arithmetic");
            return Some((Node::Arith(op, Box::new(a?), Box::new(b?)), Ty::Number));
        }
        let cmp_op = match name {
            operators::LESS => Some(Cmp::Lt),
            operators::LESS_EQUALS => Some(Cmp::Le),
            operators::GREATER => Some(Cmp::Gt),
            operators::GREATER_EQUALS => Some(Cmp::Ge),
            operators::EQUALS => Some(Cmp::Eq),
            operators::NOT_EQUALS => Some(Cmp::Ne),
            _ => None,
        };
        if let (Some(op), [a, b]) = (cmp_op, args) {
            let (na, ta) = self.expr(a, prev).unzip();
            let (nb, tb) = self.expr(b, prev).unzip();
            let (na, ta, nb, tb) = (na?, ta?, nb?, tb?);
            return match (ta, tb, op) {
                (Ty::Number, Ty::Number, _) => {
                    Some((Node::Cmp(op, Box::new(na), Box::new(nb)), Ty::Bool))
                }
                (Ty::Bool, Ty::Bool, Cmp::Eq | Cmp::Ne) => Some((
                    Node::BoolEq(op == Cmp::Eq, Box::new(na), Box::new(nb)),
                    Ty::Bool,
                )),
                _ => self.fail(
                    e,
                    "wrong-type",
                    "comparison of a number with a condition".into(),
                ),
            };
        }
        match (name, args) {
            (operators::MODULO, _) => self.fail(
                e,
                "unsupported-expression",
                "'%' is not supported on prices; use arithmetic".into(),
            ),
            (operators::NEGATE, [a]) => {
                let a = self.expect(a, prev, Ty::Number, "the operand of '-'")?;
                Some((Node::Neg(Box::new(a)), Ty::Number))
            }
            (operators::LOGICAL_NOT, [a]) => {
                let a = self.expect(a, prev, Ty::Bool, "the operand of '!'")?;
                Some((Node::Not(Box::new(a)), Ty::Bool))
            }
            (operators::LOGICAL_AND | operators::LOGICAL_OR, [a, b]) => {
                let a = self.expect(a, prev, Ty::Bool, "an operand of '&&' and '||'");
                let b = self.expect(b, prev, Ty::Bool, "an operand of '&&' and '||'");
                let (a, b) = (Box::new(a?), Box::new(b?));
                Some((
                    if name == operators::LOGICAL_AND {
                        Node::And(a, b)
                    } else {
                        Node::Or(a, b)
                    },
                    Ty::Bool,
                ))
            }
            (operators::CONDITIONAL, [c, a, b]) => {
                let c = self.expect(c, prev, Ty::Bool, "the condition of '?:'");
                let (na, ta) = self.expr(a, prev).unzip();
                let (nb, tb) = self.expr(b, prev).unzip();
                let (c, na, ta, nb, tb) = (c?, na?, ta?, nb?, tb?);
                if ta != tb {
                    return self.fail(
                        e,
                        "wrong-type",
                        "both branches of '?:' must have the same type".into(),
                    );
                }
                Some((Node::Cond(Box::new(c), Box::new(na), Box::new(nb)), ta))
            }
            ("prev", [a]) => {
                if prev {
                    return self.fail(
                        e,
                        "unsupported-expression",
                        "prev() cannot be nested".into(),
                    );
                }
                self.expr(a, true)
            }
            ("crossed_above" | "crossed_below", [a, b]) => {
                if prev {
                    return self.fail(
                        e,
                        "unsupported-expression",
                        format!("{name}() cannot be used inside prev()"),
                    );
                }
                let role = format!("an argument of {name}()");
                let pa = self.expect(a, true, Ty::Number, &role);
                let pb = self.expect(b, true, Ty::Number, &role);
                let ca = self.expect(a, false, Ty::Number, &role);
                let cb = self.expect(b, false, Ty::Number, &role);
                let (pa, pb, ca, cb) = (Box::new(pa?), Box::new(pb?), Box::new(ca?), Box::new(cb?));
                let node = if name == "crossed_above" {
                    Node::And(
                        Box::new(Node::Cmp(Cmp::Le, pa, pb)),
                        Box::new(Node::Cmp(Cmp::Gt, ca, cb)),
                    )
                } else {
                    Node::And(
                        Box::new(Node::Cmp(Cmp::Ge, pa, pb)),
                        Box::new(Node::Cmp(Cmp::Lt, ca, cb)),
                    )
                };
                Some((node, Ty::Bool))
            }
            ("abs", [a]) => {
                let a = self.expect(a, prev, Ty::Number, "the argument of abs()")?;
                Some((Node::Abs(Box::new(a)), Ty::Number))
            }
            ("min" | "max", items) if !items.is_empty() => {
                let nodes: Vec<Option<Node>> = items
                    .iter()
                    .map(|i| self.expect(i, prev, Ty::Number, &format!("an argument of {name}()")))
                    .collect();
                let nodes: Option<Vec<Node>> = nodes.into_iter().collect();
                let nodes = nodes?;
                Some((
                    if name == "min" {
                        Node::Min(nodes)
                    } else {
                        Node::Max(nodes)
                    },
                    Ty::Number,
                ))
            }
            ("prev" | "abs", _) => self.fail(
                e,
                "unknown-function",
                format!("{name}() takes one argument"),
            ),
            ("crossed_above" | "crossed_below", _) => self.fail(
                e,
                "unknown-function",
                format!("{name}() takes two arguments"),
            ),
            ("min" | "max", _) => self.fail(
                e,
                "unknown-function",
                format!("{name}() takes at least one argument"),
            ),
            (
                operators::IN | operators::INDEX | operators::OPT_INDEX | operators::OPT_SELECT,
                _,
            ) => self.fail(
                e,
                "unsupported-expression",
                "lists, maps and indexing are not supported in rules".into(),
            ),
            _ => {
                let known: Vec<String> = FUNCTIONS.iter().map(|s| s.to_string()).collect();
                let hint = crate::config::schema::suggestion(name, &known);
                self.fail(
                    e,
                    "unknown-function",
                    format!(
                        "unknown function '{name}'{hint} (rules may call {})",
                        FUNCTIONS.join(", ")
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests;
