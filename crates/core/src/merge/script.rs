//! User merges written in Rhai, run with every limit set.
//!
//! A script defines `fn merge(versions)`. `versions` is an array, in
//! canonical order, of maps `#{value, hlc, wall_ms, region}`; the function
//! returns the merged value. Scripts cannot reach a clock (`no_time`),
//! randomness (none is registered), files or modules (`no_module`), the
//! environment, `eval`, or standard output (`print` and `debug` go
//! nowhere). Every run is bounded in operations, call depth, expression
//! depth, string, array and map sizes, and wall time ([`Limits`]); a
//! failure falls back to last-writer-wins ([`super::resolve`]).
//!
//! The wall-time limit reads the host's monotonic clock. It cannot make
//! regions disagree on data: only the key's merger writes a merge back,
//! and what it wrote is what every region stores.
//!
//! Past ~400 lines only with its unit tests, which STYLE keeps beside the
//! code; the code itself is under 400.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, Position, Scope};

use super::{Input, MergeError, MergeFn};

/// The limits every script runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most operations in one call.
    pub operations: u64,
    /// Deepest function-call nesting.
    pub call_levels: usize,
    /// Deepest expression nesting (at top level, inside functions).
    pub expr_depth: (usize, usize),
    /// Longest string, in bytes.
    pub string_bytes: usize,
    /// Most items in an array.
    pub array_items: usize,
    /// Most entries in a map.
    pub map_entries: usize,
    /// Longest one call may run.
    pub wall: Duration,
}

/// The limits scripts run under.
pub const LIMITS: Limits = Limits {
    operations: 500_000,
    call_levels: 24,
    expr_depth: (64, 32),
    string_bytes: 1 << 20,
    array_items: 10_000,
    map_entries: 10_000,
    wall: Duration::from_millis(100),
};

/// Longest script accepted, in bytes.
pub const MAX_SCRIPT: usize = 64 * 1024;

thread_local! {
    /// When the script running on this thread must stop.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

fn engine(limits: &Limits) -> Engine {
    let mut e = Engine::new();
    e.set_max_operations(limits.operations)
        .set_max_call_levels(limits.call_levels)
        .set_max_expr_depths(limits.expr_depth.0, limits.expr_depth.1)
        .set_max_string_size(limits.string_bytes)
        .set_max_array_size(limits.array_items)
        .set_max_map_size(limits.map_entries)
        .set_max_variables(1_000)
        .set_max_functions(1_000)
        .set_strict_variables(true);
    e.disable_symbol("eval");
    e.on_print(|_| {});
    e.on_debug(|_, _, _| {});
    e.on_progress(|ops| {
        if ops % 1024 != 0 {
            return None;
        }
        DEADLINE.with(|d| match d.get() {
            Some(t) if Instant::now() >= t => Some(Dynamic::from("wall time")),
            _ => None,
        })
    });
    e
}

fn at(pos: Position, reason: String) -> MergeError {
    MergeError {
        reason,
        line: pos.line(),
        column: pos.position(),
    }
}

fn run_error(e: &EvalAltResult, limits: &Limits) -> MergeError {
    let reason = match e {
        EvalAltResult::ErrorTooManyOperations(_) => {
            format!("stopped after {} operations (the limit)", limits.operations)
        }
        EvalAltResult::ErrorTerminated(..) => format!(
            "stopped after {} ms (the wall-time limit)",
            limits.wall.as_millis()
        ),
        EvalAltResult::ErrorStackOverflow(_) => format!(
            "calls nested deeper than {} levels (the limit)",
            limits.call_levels
        ),
        other => {
            // Rhai appends " (line L, position C)"; the position is given
            // separately.
            let text = other.to_string();
            match text.rfind(" (line ") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    };
    at(e.position(), reason)
}

/// A compiled script.
pub struct ScriptMerge {
    engine: Engine,
    ast: AST,
    limits: Limits,
}

impl fmt::Debug for ScriptMerge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScriptMerge")
    }
}

impl ScriptMerge {
    /// Compiles `source`: a syntax error, or no `fn merge(versions)` with
    /// one parameter, is an error with its position.
    pub fn compile(source: &str) -> Result<ScriptMerge, MergeError> {
        Self::compile_with(source, LIMITS)
    }

    /// [`ScriptMerge::compile`] under other limits (tests, embedders).
    pub fn compile_with(source: &str, limits: Limits) -> Result<ScriptMerge, MergeError> {
        if source.len() > MAX_SCRIPT {
            return Err(MergeError::new(format!(
                "script of {} bytes is over the {MAX_SCRIPT}-byte limit",
                source.len()
            )));
        }
        let engine = engine(&limits);
        let ast = engine.compile(source).map_err(|e| {
            let pos = e.position();
            let text = e.to_string();
            let reason = match text.rfind(" (line ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            at(pos, format!("syntax error: {reason}"))
        })?;
        if !ast
            .iter_functions()
            .any(|f| f.name == "merge" && f.params.len() == 1)
        {
            return Err(MergeError::new(
                "the script defines no `fn merge(versions)` (one parameter)",
            ));
        }
        Ok(ScriptMerge {
            engine,
            ast,
            limits,
        })
    }
}

fn to_dynamic(v: &serde_json::Value) -> Result<Dynamic, MergeError> {
    rhai::serde::to_dynamic(v).map_err(|e| MergeError::new(format!("input: {e}")))
}

/// Stack of the thread a script runs on. Rhai and the conversions of its
/// result recurse over nested data, and a script can nest an array inside
/// itself (about 10,000 levels of arrays within the size limits, twice
/// that alternating arrays and maps): the caller's stack
/// (2 MiB on tokio's threads) is not enough for that. The space is
/// reserved, not touched, until used.
const SCRIPT_STACK: usize = 256 << 20;

/// Deepest merged value accepted: the nesting limit of client values.
pub const MAX_RESULT_DEPTH: usize = 64;

/// How deep `v` nests (a scalar is 1), counted without recursion.
fn depth(v: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            serde_json::Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            serde_json::Value::Object(m) => stack.extend(m.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    deepest
}

impl ScriptMerge {
    fn run(&self, versions: &[Input<'_>]) -> Result<serde_json::Value, MergeError> {
        let mut array = rhai::Array::with_capacity(versions.len());
        for i in versions {
            let mut m = rhai::Map::new();
            m.insert("value".into(), to_dynamic(i.value)?);
            m.insert("hlc".into(), Dynamic::from(i.version.hlc.as_u64() as i64));
            m.insert(
                "wall_ms".into(),
                Dynamic::from(i.version.hlc.wall_ms() as i64),
            );
            m.insert(
                "region".into(),
                Dynamic::from(i.region().as_str().to_string()),
            );
            array.push(Dynamic::from_map(m));
        }
        let opts = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        DEADLINE.with(|d| d.set(Some(Instant::now() + self.limits.wall)));
        let out = self.engine.call_fn_with_options::<Dynamic>(
            opts,
            &mut Scope::new(),
            &self.ast,
            "merge",
            (Dynamic::from_array(array),),
        );
        DEADLINE.with(|d| d.set(None));
        let out = out.map_err(|e| run_error(&e, &self.limits))?;
        let json = rhai::serde::from_dynamic::<serde_json::Value>(&out).map_err(|e| {
            MergeError::new(format!(
                "merge returned a {} that is not JSON: {e}",
                out.type_name()
            ))
        })?;
        let d = depth(&json);
        if d > MAX_RESULT_DEPTH {
            // Dropped here, on the big stack.
            return Err(MergeError::new(format!(
                "merge returned a value nested {d} levels deep, over the limit of {MAX_RESULT_DEPTH}"
            )));
        }
        Ok(json)
    }
}

impl MergeFn for ScriptMerge {
    fn merge(&self, versions: &[Input<'_>]) -> Result<serde_json::Value, MergeError> {
        // On a thread of its own with a large stack (see SCRIPT_STACK):
        // everything deep the script built is made and dropped there.
        std::thread::scope(|scope| {
            let runner = std::thread::Builder::new()
                .name("meridian-merge".into())
                .stack_size(SCRIPT_STACK)
                .spawn_scoped(scope, || self.run(versions))
                .map_err(|e| MergeError::new(format!("cannot start a script thread: {e}")))?;
            runner
                .join()
                .unwrap_or_else(|_| Err(MergeError::new("the script's thread panicked")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_crdt::{Dot, Hlc, RegionId, ReplicaId, Seq, Version};

    fn call(src: &str, vals: &[&str]) -> Result<serde_json::Value, MergeError> {
        call_with(src, LIMITS, vals)
    }

    fn call_with(
        src: &str,
        limits: Limits,
        vals: &[&str],
    ) -> Result<serde_json::Value, MergeError> {
        let s = ScriptMerge::compile_with(src, limits)?;
        let versions: Vec<(Version, serde_json::Value)> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let dot = Dot::new(
                    ReplicaId::new(RegionId::new("us-east").unwrap(), uuid::Uuid::from_u128(1)),
                    Seq(i as u64 + 1),
                );
                (
                    Version::new(Hlc::new(1000 + i as u64, 0).unwrap(), dot),
                    serde_json::from_str(v).unwrap(),
                )
            })
            .collect();
        let inputs: Vec<Input<'_>> = versions
            .iter()
            .map(|(version, value)| Input { value, version })
            .collect();
        s.merge(&inputs)
    }

    #[test]
    fn a_cart_sums_quantities_per_item() {
        let cart = r#"
            fn merge(versions) {
                let cart = #{};
                for v in versions {
                    for item in v.value.keys() {
                        cart[item] = (cart[item] ?? 0) + v.value[item];
                    }
                }
                cart.filter(|k, q| q != 0)
            }
        "#;
        let out = call(
            cart,
            &[
                r#"{"apple":2}"#,
                r#"{"apple":-1,"pear":1}"#,
                r#"{"pear":-1}"#,
            ],
        )
        .unwrap();
        assert_eq!(out.to_string(), r#"{"apple":1}"#);
    }

    #[test]
    fn versions_carry_hlc_and_region() {
        let out = call(
            "fn merge(vs) { [vs[0].region, vs[1].wall_ms - vs[0].wall_ms, vs[1].hlc > vs[0].hlc] }",
            &["1", "2"],
        )
        .unwrap();
        assert_eq!(out.to_string(), r#"["us-east",1,true]"#);
    }

    #[test]
    fn bad_scripts_say_where_and_why() {
        let e = ScriptMerge::compile("fn merge(v) {\n  let x = ;\n}").unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(11)), "{e}");
        assert!(e.reason.starts_with("syntax error: "), "{e}");
        let e = ScriptMerge::compile("fn combine(a, b) { a }").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the script defines no `fn merge(versions)` (one parameter)"
        );
        let e = ScriptMerge::compile(&"x".repeat(MAX_SCRIPT + 1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "script of 65537 bytes is over the 65536-byte limit"
        );
        assert!(
            ScriptMerge::compile(&format!(
                "fn merge(v) {{ v }}{}",
                " ".repeat(MAX_SCRIPT - 19)
            ))
            .is_ok()
        );
    }

    #[test]
    fn limits_stop_runaway_scripts() {
        let e = call("fn merge(v) { loop {} }", &["1", "2"]).unwrap_err();
        assert_eq!(e.reason, "stopped after 500000 operations (the limit)");
        let e = call("fn f(n) { f(n + 1) }\nfn merge(v) { f(0) }", &["1", "2"]).unwrap_err();
        assert!(
            e.reason.contains("24 levels") || e.reason.contains("Stack overflow"),
            "{e}"
        );
        let e = call(
            "fn merge(v) { let a = []; a.pad(200000, 0); a }",
            &["1", "2"],
        )
        .unwrap_err();
        assert!(e.reason.contains("too large"), "{e}");
        let e = call(
            "fn merge(v) { let s = \"x\"; for i in 0..30 { s += s; } s }",
            &["1", "2"],
        )
        .unwrap_err();
        assert!(e.reason.contains("too large"), "{e}");
    }

    #[test]
    fn the_wall_time_limit_stops_a_script_under_its_operation_limit() {
        let limits = Limits {
            operations: u64::MAX / 2,
            wall: Duration::from_millis(5),
            ..LIMITS
        };
        let src = "fn merge(v) { let n = 0; loop { n += 1; } }";
        let t = Instant::now();
        let e = call_with(src, limits, &["1", "1"]).unwrap_err();
        assert_eq!(e.reason, "stopped after 5 ms (the wall-time limit)");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "stopped promptly: {:?}",
            t.elapsed()
        );
        // The deadline is per call: the next call gets its own.
        assert!(call_with(src, limits, &["1", "1"]).is_err());
    }

    #[test]
    fn no_clock_randomness_files_or_eval() {
        for (src, missing) in [
            ("fn merge(v) { timestamp() }", "timestamp"),
            ("fn merge(v) { rand() }", "rand"),
            ("fn merge(v) { random() }", "random"),
            ("fn merge(v) { open_file(\"/etc/passwd\") }", "open_file"),
        ] {
            let e = call(src, &["1", "2"]).unwrap_err();
            assert!(
                e.reason.contains("Function not found") && e.reason.contains(missing),
                "{e}"
            );
        }
        assert!(ScriptMerge::compile("import \"x\" as y; fn merge(v) { 1 }").is_err());
        assert!(ScriptMerge::compile("fn merge(v) { eval(\"1\") }").is_err());
        let out = call(
            "fn merge(v) { print(\"hi\"); debug(1); v.len() }",
            &["1", "2"],
        )
        .unwrap();
        assert_eq!(out, serde_json::json!(2));
    }

    #[test]
    fn a_deeply_nested_result_is_refused_without_overflowing_a_stack() {
        // Thousands of levels (Rhai's size limits count nested items, so
        // about 10k is the most a script can build), given the time a debug
        // build needs: deeper than a small stack converts or drops safely.
        let limits = Limits {
            wall: Duration::from_secs(60),
            ..LIMITS
        };
        let e = call_with(
            "fn merge(v) { let x = 1; for i in 0..3000 { x = [x]; } x }",
            limits,
            &["1", "1"],
        )
        .unwrap_err();
        assert!(
            e.reason.contains("levels deep, over the limit of 64"),
            "{e}"
        );
        let ok = call(
            "fn merge(v) { let x = 1; for i in 0..63 { x = [x]; } x }",
            &["1", "2"],
        );
        assert!(ok.is_ok(), "{ok:?}");
        let over = call(
            "fn merge(v) { let x = 1; for i in 0..64 { x = [x]; } x }",
            &["1", "2"],
        );
        assert!(over.is_err());
    }

    #[test]
    fn a_result_that_is_not_json_is_an_error() {
        let e = call("fn merge(v) { Fn(\"merge\") }", &["1", "2"]).unwrap_err();
        assert!(e.reason.starts_with("merge returned a"), "{e}");
    }
}
