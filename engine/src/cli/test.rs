//! `ordersync test [PATH...]`: run workflow test files offline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use super::ConfigArgs;
use crate::config::{LoadOptions, load};
use crate::testing::runner::run_file;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Test files or directories (default: <config-dir>/workflows/tests).
    paths: Vec<PathBuf>,
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path).into_iter().flatten().filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            if e.is_dir() || e.to_string_lossy().ends_with(".test.yaml") || e.to_string_lossy().ends_with(".test.yml") {
                collect(&e, out);
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
}

pub fn run(args: Args) -> ExitCode {
    let paths = args.config.paths();
    let started = std::time::Instant::now();
    let mut cfg = match load(&paths, LoadOptions { resolve_secrets: false, fake_secrets: true, ..LoadOptions::default() }) {
        Ok(c) => c,
        Err(diags) => {
            for d in &diags.0 {
                eprintln!("{d}");
            }
            eprintln!("the config has {} error(s); no test ran", diags.len());
            return ExitCode::FAILURE;
        }
    };
    cfg.version = 1;
    let cfg = Arc::new(cfg);
    let targets = if args.paths.is_empty() { vec![paths.workflows_dir().join("tests")] } else { args.paths };
    let mut files = Vec::new();
    for t in &targets {
        collect(t, &mut files);
    }
    let (mut passed, mut failed, mut broken, mut skipped) = (0, 0, 0, 0);
    for f in &files {
        let r = run_file(&cfg, f);
        if let Some(why) = &r.skipped {
            skipped += 1;
            println!("SKIP {}: {why}", f.display());
        }
        for e in &r.errors {
            eprintln!("{e}");
            broken += 1;
        }
        for c in &r.cases {
            if c.passed() {
                passed += 1;
                println!("PASS {} :: {} ({:.0} ms)", f.display(), c.name, c.took.as_secs_f64() * 1000.0);
            } else {
                failed += 1;
                println!("FAIL {} :: {}", f.display(), c.name);
                for failure in &c.failures {
                    for line in failure.lines() {
                        println!("    {line}");
                    }
                }
            }
        }
    }
    println!(
        "{passed} passed, {failed} failed{}{} ({} files in {:.2} s)",
        if broken > 0 { format!(", {broken} test file error(s)") } else { String::new() },
        if skipped > 0 { format!(", {skipped} file(s) skipped") } else { String::new() },
        files.len(),
        started.elapsed().as_secs_f64()
    );
    if failed > 0 || broken > 0 || files.is_empty() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
