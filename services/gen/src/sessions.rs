//! Sessions of calls, one shape per function: healthy shapes and each runaway kind. A shape
//! writes calls through [`Gen`], which knows who is calling (tenant, team, user, workflow,
//! region, model) and keeps the clock.
use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tally_contract::records::{CallStatus, LlmCall, LoopSignalType, Micros};

pub const SECOND: Micros = 1_000_000;
pub const MINUTE: Micros = 60 * SECOND;
pub const HOUR: Micros = 60 * MINUTE;

/// Who makes the calls of a session, and where.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: String,
    pub team: String,
    pub user: String,
    pub workflow: String,
    /// Prefix of event ids and session ids (`<prefix>-s<n>`).
    pub prefix: String,
    pub region: Option<String>,
    /// The model every call uses, instead of the shape's own choice.
    pub model: Option<(&'static str, &'static str)>,
    /// `healthy/<shape>` or the runaway kind, written to the calls' `tally.label` tag.
    pub label: String,
}

/// A shape: writes one or more sessions of calls.
pub type Shape = fn(&mut Gen);

/// The healthy shapes, by name.
pub const HEALTHY: [(&str, Shape); 7] = [
    ("chat", chat),
    ("coding-agent", coding_agent),
    ("flaky-provider", flaky_provider),
    ("multi-agent", multi_agent),
    ("batch-job", batch_job),
    ("rag", rag_assistant),
    ("steady-workflow", steady_workflow),
];

/// The runaway shapes: the kind each shows, and its variants.
pub const LOOPS: [(LoopSignalType, Shape); 9] = [
    (LoopSignalType::RetryStorm, retry_storm_failures),
    (LoopSignalType::RetryStorm, retry_storm_same_prompt),
    (LoopSignalType::RepeatedToolCall, repeated_tool_call),
    (LoopSignalType::Cycle, cycle_with_arguments),
    (LoopSignalType::Cycle, cycle_of_handoffs),
    (LoopSignalType::ContextGrowth, context_growth),
    (LoopSignalType::IdleBurn, idle_burn),
    (LoopSignalType::IdleBurn, idle_burn_same_output),
    (LoopSignalType::UsageSpike, usage_spike),
];

/// Builds the calls of one caller's sessions.
pub struct Gen {
    rng: StdRng,
    caller: Caller,
    expected: BTreeSet<LoopSignalType>,
    calls: Vec<LlmCall>,
    /// Event time of the next call.
    pub at: Micros,
    session: u32,
    step: i32,
}

/// What varies between calls.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub agent: &'a str,
    pub model: &'a str,
    pub input: i64,
    pub cached: i64,
    pub output: i64,
    pub tool: Option<(&'a str, String)>,
    pub prompt: String,
    /// Fingerprint of the completion.
    pub completion: String,
    pub failed: bool,
    pub human: Option<bool>,
}

impl Gen {
    /// A generator for `caller`, starting at `at`, deterministic for `seed`.
    pub fn new(seed: u64, caller: Caller, at: Micros) -> Gen {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            caller,
            expected: BTreeSet::new(),
            calls: Vec::new(),
            at,
            session: 0,
            step: 0,
        }
    }

    /// The calls, in event-time order, and every loop kind they show by construction.
    pub fn finish(mut self) -> (Vec<LlmCall>, BTreeSet<LoopSignalType>) {
        if let Ok(kind) = self.caller.label.parse() {
            self.expected.insert(kind);
        }
        self.calls
            .sort_by(|a, b| (a.occurred_at, &a.event_id).cmp(&(b.occurred_at, &b.event_id)));
        (self.calls, self.expected)
    }

    /// Also expect this signal (one a shape shows besides its own kind).
    fn expect(&mut self, signal: LoopSignalType) {
        self.expected.insert(signal);
    }

    /// Starts a new session.
    fn new_session(&mut self) {
        self.session += 1;
        self.step = 0;
    }

    /// A fresh fingerprint: what distinct text hashes to.
    pub fn fingerprint(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }

    /// A random whole number in `low..high`.
    pub fn between(&mut self, low: i64, high: i64) -> i64 {
        self.rng.random_range(low..high)
    }

    /// The random source, for callers composing sessions.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Waits between `low` and `high` seconds.
    fn wait(&mut self, low: i64, high: i64) {
        self.at += self.between(low, high) * SECOND;
    }

    /// Appends a call of the current session.
    fn call(&mut self, call: Call<'_>) {
        self.step += 1;
        let n = self.calls.len();
        let caller = &self.caller;
        let (provider, model) = match caller.model {
            Some(pair) => pair,
            None => (provider_of(call.model), call.model),
        };
        let mut record = LlmCall::new(
            &format!("{}-{n}", caller.prefix),
            self.at,
            &caller.tenant,
            &caller.team,
            provider,
            model,
        );
        record.received_at = self.at + 40_000;
        record.user = Some(caller.user.clone());
        record.workflow = Some(caller.workflow.clone());
        record.session_id = Some(format!("{}-s{}", caller.prefix, self.session));
        record.agent = Some(call.agent.to_string());
        record.step = Some(self.step);
        record.region.clone_from(&caller.region);
        record.input_tokens = call.input;
        record.cache_read_tokens = call.cached.min(call.input);
        record.output_tokens = call.output;
        // Reasoning models think before they answer: output includes the reasoning.
        if model.starts_with('o') {
            record.reasoning_tokens = call.output * 3;
            record.output_tokens += record.reasoning_tokens;
        }
        // Anthropic writes the new part of a cached prompt to its cache (input includes it).
        if provider == "anthropic" && record.cache_read_tokens > 0 {
            record.cache_write_tokens = (call.input - record.cache_read_tokens) / 2;
        }
        record.latency_ms = Some(400 + call.output);
        record.prompt_fingerprint = Some(call.prompt);
        record.output_fingerprint = (!call.failed).then_some(call.completion);
        if let Some((tool, args)) = call.tool {
            record.tool_name = Some(tool.to_string());
            record.tool_args_fingerprint = Some(args);
        }
        if call.failed {
            record.status = CallStatus::Error;
            record.error_type = Some("rate_limit_error".into());
            record.output_tokens = 0;
            record.reasoning_tokens = 0;
        }
        if let Some(human) = call.human {
            record.tags.insert("interactive".into(), human.to_string());
        }
        record
            .tags
            .insert("tally.scenario".into(), caller.prefix.clone());
        record
            .tags
            .insert("tally.label".into(), caller.label.clone());
        self.calls.push(record);
    }

    /// A plain model call of `agent` with a fresh prompt.
    fn think(
        &mut self,
        agent: &'static str,
        model: &'static str,
        input: i64,
        cached: i64,
    ) -> Call<'static> {
        Call {
            agent,
            model,
            input,
            cached,
            output: self.between(80, 900),
            tool: None,
            prompt: self.fingerprint(),
            completion: self.fingerprint(),
            failed: false,
            human: None,
        }
    }
}

/// The provider of a model name the shapes use.
pub fn provider_of(model: &str) -> &'static str {
    if model.starts_with("claude") {
        "anthropic"
    } else if model.starts_with("gemini") {
        "gcp.gemini"
    } else {
        "openai"
    }
}

const TOOLS: [&str; 6] = [
    "read_file",
    "edit_file",
    "run_tests",
    "search",
    "list_dir",
    "shell",
];

// ---- healthy shapes ----

/// A person chatting: interactive turns, growing conversation, no tools.
pub fn chat(g: &mut Gen) {
    for _ in 0..2 {
        g.new_session();
        let turns = g.between(5, 30);
        let mut context = g.between(500, 3_000);
        for _ in 0..turns {
            let mut call = g.think("assistant", "gpt-4o-mini", context, 0);
            call.human = Some(true);
            g.call(call);
            context += g.between(200, 1_200);
            g.wait(20, 180);
        }
        g.wait(3_600, 7_200);
    }
}

/// A long coding agent: varied tools and arguments (a file re-read once after an edit),
/// cached context growing slowly and compacted now and then, a person checking in.
pub fn coding_agent(g: &mut Gen) {
    g.new_session();
    let steps = g.between(80, 150);
    let mut context = g.between(8_000, 20_000);
    let mut last_read: Option<String> = None;
    for step in 0..steps {
        let mut call = g.think("coder", "claude-sonnet-4-5", context, context * 8 / 10);
        call.human = Some(step % 40 == 0);
        let tool = TOOLS[g.between(0, TOOLS.len() as i64) as usize];
        // Re-reading the file just edited: the same arguments, once.
        let reread = tool == "read_file" && last_read.is_some() && g.between(0, 3) == 0;
        let args = match last_read.take() {
            Some(file) if reread => file,
            kept => {
                last_read = kept;
                g.fingerprint()
            }
        };
        if tool == "edit_file" {
            last_read = Some(args.clone());
        }
        call.tool = Some((tool, args));
        g.call(call);
        context += g.between(300, 1_500);
        if context > 90_000 {
            context = g.between(15_000, 25_000); // compaction
        }
        g.wait(5, 45);
    }
}

/// An agent on a flaky provider: a failure now and then, retried once or twice.
pub fn flaky_provider(g: &mut Gen) {
    g.new_session();
    let steps = g.between(30, 60);
    for _ in 0..steps {
        let input = g.between(2_000, 8_000);
        let call = g.think("triage", "gpt-4o", input, 0);
        let failures = if g.between(0, 6) == 0 {
            g.between(1, 3)
        } else {
            0
        };
        for _ in 0..failures {
            let mut failed = call.clone();
            failed.failed = true;
            g.call(failed);
            g.wait(1, 5);
        }
        g.call(call);
        g.wait(10, 60);
    }
}

/// Planner, executor and critic taking turns, each step with its own tool arguments.
pub fn multi_agent(g: &mut Gen) {
    g.new_session();
    let rounds = g.between(8, 15);
    let mut context = g.between(4_000, 9_000);
    for _ in 0..rounds {
        for (agent, tool) in [
            ("planner", "plan"),
            ("executor", "shell"),
            ("critic", "review"),
        ] {
            let mut call = g.think(agent, "gpt-4.1", context, context / 2);
            let args = g.fingerprint();
            call.tool = Some((tool, args));
            g.call(call);
            context += g.between(200, 900);
            g.wait(5, 40);
        }
    }
}

/// A nightly job summarising documents: autonomous for 90 minutes, then done.
pub fn batch_job(g: &mut Gen) {
    g.new_session();
    let end = g.at + 90 * MINUTE;
    while g.at < end {
        let input = g.between(3_000, 12_000);
        let mut call = g.think("summariser", "gpt-4o-mini", input, 0);
        call.human = Some(false);
        g.call(call);
        g.wait(20, 90);
    }
}

/// A retrieval assistant: a search with a new query, then an answer, per question.
pub fn rag_assistant(g: &mut Gen) {
    for _ in 0..3 {
        g.new_session();
        for _ in 0..g.between(3, 10) {
            let input = g.between(6_000, 10_000);
            let mut search = g.think("rag", "gpt-4o", input, 0);
            search.human = Some(true);
            let args = g.fingerprint();
            search.tool = Some(("search", args));
            g.call(search);
            g.wait(1, 4);
            let answer = g.think("rag", "gpt-4o", input + 2_000, 0);
            g.call(answer);
            g.wait(30, 240);
        }
        g.wait(600, 1_800);
    }
}

/// A workflow with steady traffic for eight hours, rising gently through the day.
pub fn steady_workflow(g: &mut Gen) {
    let end = g.at + 8 * HOUR;
    let start = g.at;
    while g.at < end {
        g.new_session();
        let ramp = 100 + (g.at - start) * 60 / (8 * HOUR); // up to 1.6x by evening
        for _ in 0..g.between(1, 4) {
            let input = g.between(8_000, 14_000) * ramp / 100;
            let call = g.think("reporter", "gpt-4o-mini", input, 0);
            g.call(call);
            g.wait(5, 20);
        }
        g.wait(30, 90);
    }
}

// ---- runaway kinds ----

/// Some healthy steps, then a call failing again and again.
pub fn retry_storm_failures(g: &mut Gen) {
    g.new_session();
    warm_up(g, "fixer");
    let attempts = g.between(8, 14);
    let call = g.think("fixer", "gpt-4o", 6_000, 0);
    for _ in 0..attempts {
        let mut failed = call.clone();
        failed.failed = true;
        g.call(failed);
        g.wait(1, 3);
    }
}

/// The same prompt sent again and again, answered differently every time.
pub fn retry_storm_same_prompt(g: &mut Gen) {
    g.new_session();
    warm_up(g, "poller");
    let call = g.think("poller", "claude-sonnet-4-5", 12_000, 0);
    for _ in 0..g.between(8, 20) {
        // The same request each time; the answers vary (and are rejected).
        let mut again = call.clone();
        again.completion = g.fingerprint();
        g.call(again);
        g.wait(2, 10);
    }
}

/// The same search, with the same arguments, between other varied steps.
pub fn repeated_tool_call(g: &mut Gen) {
    g.new_session();
    warm_up(g, "researcher");
    let stuck = g.fingerprint();
    for _ in 0..g.between(5, 9) {
        let mut call = g.think("researcher", "gpt-4o", 9_000, 4_000);
        call.tool = Some(("search", stuck.clone()));
        g.call(call);
        g.wait(3, 10);
        let mut other = g.think("researcher", "gpt-4o", 9_500, 4_000);
        let tool = TOOLS[g.between(0, 3) as usize];
        let args = g.fingerprint();
        other.tool = Some((tool, args));
        g.call(other);
        g.wait(3, 10);
    }
}

/// Agents handing the same work around: A(x) → B(y) → C(z) → A(x) …
pub fn cycle_with_arguments(g: &mut Gen) {
    g.expect(LoopSignalType::RepeatedToolCall);
    g.new_session();
    warm_up(g, "planner");
    let pattern: Vec<(&str, &str, String)> = vec![
        ("planner", "delegate", g.fingerprint()),
        ("executor", "shell", g.fingerprint()),
        ("critic", "review", g.fingerprint()),
    ];
    for _ in 0..g.between(4, 7) {
        for (agent, tool, args) in &pattern {
            let mut call = g.think(agent, "gpt-4.1", 7_000, 3_000);
            call.tool = Some((tool, args.clone()));
            g.call(call);
            g.wait(2, 8);
        }
    }
}

/// Two agents handing over to each other with a hand-off tool that takes no arguments.
pub fn cycle_of_handoffs(g: &mut Gen) {
    g.new_session();
    warm_up(g, "writer");
    let first_handoff = g.calls.len();
    for _ in 0..g.between(4, 8) {
        for agent in ["writer", "editor"] {
            let mut call = g.think(agent, "gpt-4o", 5_000, 2_000);
            call.tool = Some(("handoff", String::new()));
            g.call(call);
            g.wait(2, 8);
        }
    }
    // A hand-off carries no argument fingerprint.
    for call in &mut g.calls[first_handoff..] {
        call.tool_args_fingerprint = None;
    }
}

/// An agent re-sending its whole context, which grows by a share of itself every step,
/// without caching.
pub fn context_growth(g: &mut Gen) {
    g.new_session();
    let mut context = g.between(20_000, 30_000) as f64;
    let growth = 1.12 + g.between(0, 8) as f64 / 100.0;
    for _ in 0..g.between(14, 22) {
        let mut call = g.think("analyst", "gpt-4o", context as i64, 0);
        let tool = TOOLS[g.between(0, TOOLS.len() as i64) as usize];
        let args = g.fingerprint();
        call.tool = Some((tool, args));
        g.call(call);
        context *= growth;
        g.wait(10, 40);
    }
}

/// An autonomous agent working for three hours with nobody watching.
pub fn idle_burn(g: &mut Gen) {
    g.new_session();
    let end = g.at + 3 * HOUR;
    let mut context = 10_000;
    while g.at < end {
        let mut call = g.think("crawler", "gpt-4o-mini", context, context * 7 / 10);
        call.human = Some(false);
        let args = g.fingerprint();
        call.tool = Some(("fetch_page", args));
        g.call(call);
        context = (context + g.between(100, 600)).min(60_000);
        g.wait(40, 180);
    }
}

/// An unattended agent getting the same answer again and again (a status check that never
/// changes), its prompt changing with the growing transcript.
pub fn idle_burn_same_output(g: &mut Gen) {
    g.new_session();
    warm_up(g, "watcher");
    let answer = g.fingerprint();
    let mut context = 4_000;
    for _ in 0..g.between(7, 12) {
        let mut call = g.think("watcher", "gpt-4o-mini", context, 0);
        call.human = Some(false);
        call.completion = answer.clone();
        g.call(call);
        context += g.between(50, 200);
        g.wait(30, 90);
    }
}

/// A workflow with a steady baseline for three hours, then a burst of ten times its rate.
pub fn usage_spike(g: &mut Gen) {
    let calm_until = g.at + 3 * HOUR;
    while g.at < calm_until {
        g.new_session();
        let input = g.between(10_000, 16_000);
        let call = g.think("reporter", "gpt-4o-mini", input, 0);
        g.call(call);
        g.wait(40, 80);
    }
    let burst_until = g.at + 4 * MINUTE;
    while g.at < burst_until {
        g.new_session();
        let input = g.between(10_000, 16_000);
        let call = g.think("reporter", "gpt-4o-mini", input, 0);
        g.call(call);
        g.wait(3, 9);
    }
}

/// A few healthy, varied steps before a loop starts.
fn warm_up(g: &mut Gen, agent: &'static str) {
    for _ in 0..g.between(3, 8) {
        let input = g.between(3_000, 6_000);
        let mut call = g.think(agent, "gpt-4o", input, 0);
        let tool = TOOLS[g.between(0, TOOLS.len() as i64) as usize];
        let args = g.fingerprint();
        call.tool = Some((tool, args));
        g.call(call);
        g.wait(5, 30);
    }
}
