//! Every input under tests/fixtures/fuzz/<target>/ through the same entry point its fuzz target
//! (fuzz/fuzz_targets/<target>.rs) runs: the cases the fuzzers found, the seeds `make fuzz`
//! starts from, and hand-written hostile inputs (endless template loops, output and value
//! blow-ups, a namespace that contains itself). An entry asserts its own invariants and panics
//! on a violation; here it must return, and fast enough that the run ends (the template budgets
//! stop the loops and the blow-ups). Inputs for the header parsers' targets live in
//! tests/fixtures/formats/fuzz (tests/formats.rs).

use std::path::PathBuf;

use pocketlm::fuzzing::TARGETS;

#[test]
fn fuzz_regressions() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some((_, run)) = TARGETS.iter().find(|(t, _)| *t == name) else {
            panic!("tests/fixtures/fuzz/{name}: no fuzz target of that name");
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            eprintln!("{name}: {}", file.file_name().unwrap().to_string_lossy());
            run(&data);
            replayed += 1;
        }
    }
    // Every target has inputs: at least its seeds.
    for (target, _) in TARGETS {
        assert!(
            dir.join(target)
                .read_dir()
                .is_ok_and(|mut d| d.next().is_some()),
            "tests/fixtures/fuzz/{target} has no inputs"
        );
    }
    assert!(replayed >= TARGETS.len());
}
