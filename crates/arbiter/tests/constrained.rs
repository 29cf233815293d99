//! Constrained jobs on SmolLM2: the output is valid JSON of the schema, the provider's run and
//! its recorded run agree, every sample step re-executes to its leaf only with the job's mask,
//! and the on-chain arbiter decides a constrained sample step from the tokenizer its evidence
//! carries (checked against the record), refusing evidence without it or with another.

mod common;

use std::time::Instant;

use piazza_arbiter::constraint::token_filter;
use piazza_arbiter::{arbitrate, execute, generate_params, prompt_ids, run_job, LoadedModel};
use piazza_grammar::Constraint;
use piazza_llm::{Compute, Generator, OpKind, RunOptions, TokenFilter};
use serde_json::Value;

use common::{chat_job, claim, smollm2};

const PERSON: &str = r#"{"type":"object","properties":{"name":{"type":"string","maxLength":16},"age":{"type":"integer"},"city":{"enum":["Paris","Rome","Tokyo"]}},"required":["name","age","city"],"additionalProperties":false}"#;
const TOOLS: &str = r#"{"anyOf":[{"type":"object","properties":{"name":{"const":"get_weather"},"arguments":{"type":"object","properties":{"city":{"type":"string","maxLength":20}},"required":["city"]}},"required":["name","arguments"]},{"type":"object","properties":{"name":{"const":"add"},"arguments":{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}},"required":["a","b"]}},"required":["name","arguments"]}]}"#;
const LIST: &str = r#"{"type":"array","items":{"type":"string","maxLength":12},"maxItems":3}"#;

fn generator() -> &'static Generator {
    match &smollm2().loaded {
        LoadedModel::Generation(g) => g,
        LoadedModel::Embedding(_) => unreachable!("smollm2 is a generation model"),
    }
}

fn constrained_job(
    constraint: &Constraint,
    prompt: &str,
    max_tokens: u32,
    temperature_milli: u32,
) -> piazza_arbiter::JobSpec {
    let mut job = chat_job(prompt, max_tokens, temperature_milli, 7);
    job.input = constraint.wrap(&job.input);
    job
}

/// The shape each schema promises, checked on the parsed output.
fn check_output(schema: &str, value: &Value) {
    match schema {
        PERSON => {
            assert!(
                value["name"]
                    .as_str()
                    .is_some_and(|s| s.chars().count() <= 16),
                "{value}"
            );
            assert!(value["age"].is_i64() || value["age"].is_u64(), "{value}");
            assert!(
                ["Paris", "Rome", "Tokyo"].contains(&value["city"].as_str().unwrap_or("")),
                "{value}"
            );
            assert_eq!(value.as_object().map(|o| o.len()), Some(3), "{value}");
        }
        TOOLS => match value["name"].as_str() {
            Some("get_weather") => assert!(value["arguments"]["city"].is_string(), "{value}"),
            Some("add") => assert!(
                value["arguments"]["a"].is_number() && value["arguments"]["b"].is_number(),
                "{value}"
            ),
            _ => panic!("no tool: {value}"),
        },
        _ => {
            let items = value
                .as_array()
                .unwrap_or_else(|| panic!("not a list: {value}"));
            assert!(
                items.len() <= 3
                    && items
                        .iter()
                        .all(|i| i.as_str().is_some_and(|s| s.chars().count() <= 12)),
                "{value}"
            );
        }
    }
}

#[test]
fn constrained_outputs_parse_validate_and_match_the_recorded_run() {
    let model = smollm2();
    // PERSON's shortest value is 33 bytes: 34 tokens leave the model almost no room, and the
    // mask must still close the value in time.
    let cases = [
        (
            PERSON,
            "Invent a person: name, age and city, as JSON.",
            34,
            0,
        ),
        (TOOLS, "Add 2 and 40 with a tool.", 56, 700),
        (LIST, "List three fruits as a JSON array.", 24, 700),
    ];
    for (schema, prompt, max_tokens, temperature) in cases {
        let constraint = Constraint::JsonSchema(schema.as_bytes().to_vec());
        let job = constrained_job(&constraint, prompt, max_tokens, temperature);
        let started = Instant::now();
        let output = execute(&model.loaded, &job, 2).unwrap();
        let elapsed = started.elapsed();
        let text = String::from_utf8(output.output.clone()).unwrap();
        eprintln!(
            "{prompt:?} (t={temperature}, max {max_tokens}): {text} in {} tokens, {:.0} ms",
            output.work_units,
            elapsed.as_secs_f64() * 1e3
        );
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        check_output(schema, &value);
        assert!(output.work_units <= u64::from(max_tokens));
        if schema == LIST {
            let run = run_job(&model.loaded, &job, 2, None).unwrap();
            assert_eq!(
                (run.trace_root, run.output.clone()),
                (output.trace_root, output.output)
            );
        }
    }
}

#[test]
fn the_header_is_not_prompt_text() {
    let job = chat_job("Say hi.", 8, 0, 0);
    let wrapped = constrained_job(&Constraint::JsonObject, "Say hi.", 8, 0);
    let text = |j: &piazza_arbiter::JobSpec| String::from_utf8_lossy(&j.input).into_owned();
    assert_eq!(
        prompt_ids(generator(), &wrapped, &text(&wrapped)).unwrap(),
        prompt_ids(generator(), &job, &text(&job)).unwrap()
    );
    let mut broken = wrapped.clone();
    broken.input.truncate(25);
    assert!(execute(&smollm2().loaded, &broken, 2).is_err());
}

#[test]
fn sample_steps_reexecute_only_under_the_mask_and_arbitration_applies_it() {
    let model = smollm2();
    let generator = generator();
    let constraint = Constraint::JsonSchema(PERSON.as_bytes().to_vec());
    let job = constrained_job(&constraint, "Who are you? Answer in JSON.", 40, 0);
    let filter = token_filter(generator, &job).unwrap().unwrap();
    let prompt = prompt_ids(generator, &job, &String::from_utf8_lossy(&job.input)).unwrap();
    let options = RunOptions {
        filter: Some(&filter as &dyn TokenFilter),
        record: true,
        ..RunOptions::default()
    };
    let (generation, recording) = generator
        .generate_with(
            &prompt,
            &generate_params(&job),
            Compute::new(2),
            options,
            |_| {},
        )
        .unwrap();
    let recording = recording.unwrap();
    let sample_steps: Vec<usize> = (0..recording.graph.steps.len())
        .filter(|&i| {
            matches!(
                recording.graph.ops[recording.graph.steps[i].op].kind,
                OpKind::Sample { .. }
            )
        })
        .collect();
    assert_eq!(sample_steps.len(), generation.ids.len());
    let mut unmasked_differs = 0;
    for &step in &sample_steps {
        let inputs = recording.step_inputs(step).unwrap();
        let masked = generator
            .execute_step_filtered(&recording.graph, step, &inputs, &filter)
            .unwrap();
        assert_eq!(
            Generator::step_leaf(step, &masked),
            generation.trace.step_hashes[step]
        );
        let plain = generator
            .execute_step(&recording.graph, step, &inputs)
            .unwrap();
        if Generator::step_leaf(step, &plain) != generation.trace.step_hashes[step] {
            unmasked_differs += 1;
        }
    }
    eprintln!(
        "{unmasked_differs} of {} sample steps chose differently without the mask",
        sample_steps.len()
    );
    assert!(
        unmasked_differs > 0,
        "the mask changed no choice: {}",
        generation.text
    );
    // The chain's arbiter rebuilds the mask from the tokenizer in the sample step's evidence:
    // a step the mask changed re-executes to the honest leaf.
    let run = run_job(&model.loaded, &job, 2, None).unwrap();
    assert_eq!(run.trace_root, generation.trace.root);
    let masked_step = sample_steps
        .iter()
        .copied()
        .find(|&step| {
            let inputs = recording.step_inputs(step).unwrap();
            let plain = generator
                .execute_step(&recording.graph, step, &inputs)
                .unwrap();
            Generator::step_leaf(step, &plain) != generation.trace.step_hashes[step]
        })
        .unwrap() as u64;
    let evidence = common::check_step(model, &job, &run, masked_step, "constrained sample");
    assert_eq!(
        evidence.tokenizer,
        generator.tokenizer().metadata_preimage(),
        "a constrained sample step carries the tokenizer"
    );
    eprintln!(
        "constrained sample step evidence: {} bytes, of which tokenizer {} bytes ({} tokens)",
        evidence.encoded_len(),
        evidence.tokenizer.len(),
        generator.config().vocab
    );
    // The step before it (the logits) carries none and still arbitrates.
    let before = common::check_step(model, &job, &run, masked_step - 1, "constrained");
    assert!(before.tokenizer.is_empty());
    // A cheater that corrupted the sample step is decided against: its leaf is not the one
    // the masked re-execution gives, whichever party's run the evidence comes from.
    let cheat = run_job(&model.loaded, &job, 2, Some(masked_step)).unwrap();
    let from_cheat = cheat.evidence(&model.loaded, masked_step).unwrap();
    let leaf = arbitrate(&model.commitments, &job, &claim(&cheat), &from_cheat).unwrap();
    assert_eq!(leaf, run.leaves[masked_step as usize]);
    assert_ne!(leaf, cheat.leaves[masked_step as usize]);
    // Hostile evidence: no tokenizer, a tokenizer one byte off (not the record's hash), a
    // tokenizer on a step that reads none.
    let refused = |evidence: &piazza_arbiter::Evidence, what: &str| {
        let error = arbitrate(&model.commitments, &job, &claim(&run), evidence).unwrap_err();
        assert!(
            matches!(error, piazza_arbiter::ArbiterError::Tokenizer(_)),
            "{what}: {error}"
        );
        eprintln!("{what}: refused: {error}");
    };
    let mut without = evidence.clone();
    without.tokenizer.clear();
    refused(&without, "no tokenizer");
    let mut other = evidence.clone();
    let last = other.tokenizer.len() - 1;
    other.tokenizer[last] ^= 1;
    refused(&other, "another tokenizer");
    let mut extra = before.clone();
    extra.tokenizer = evidence.tokenizer.clone();
    refused(&extra, "a tokenizer the step does not read");
    // An unconstrained job's sample step carries none.
    let plain_job = chat_job("Who are you?", 2, 0, 7);
    let plain = run_job(&model.loaded, &plain_job, 2, None).unwrap();
    let plain_evidence = plain
        .evidence(&model.loaded, plain.step_count() - 1)
        .unwrap();
    assert!(plain_evidence.tokenizer.is_empty());
}

#[test]
fn mask_cost_per_token_is_measured() {
    let generator = generator();
    let job = constrained_job(&Constraint::JsonObject, "x", 64, 0);
    let started = Instant::now();
    let filter = token_filter(generator, &job).unwrap().unwrap();
    let built = started.elapsed();
    let mut allowed = vec![false; generator.config().vocab];
    // Inside a string most of the vocabulary is allowed: the costliest scan.
    let in_string = generator.tokenize(r#"{"note":"The"#).unwrap();
    for (label, generated) in [
        ("at the start", &[][..]),
        ("inside a string", &in_string[..]),
    ] {
        filter.allowed(generated, &mut allowed).unwrap();
        let started = Instant::now();
        filter.allowed(generated, &mut allowed).unwrap();
        let elapsed = started.elapsed();
        let count = allowed.iter().filter(|&&a| a).count();
        eprintln!(
            "vocabulary of {} tokens (filter built in {:.1} ms): mask {label} {:.1} ms, {count} allowed",
            allowed.len(),
            built.as_secs_f64() * 1e3,
            elapsed.as_secs_f64() * 1e3
        );
        assert!(count > 0 && !allowed[generator.tokenizer().eos.unwrap() as usize]);
    }
}
