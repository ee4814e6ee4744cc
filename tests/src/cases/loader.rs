//! Plugin loading: a missing file, a file that is not a plugin, and a plugin of the wrong ABI
//! version each give a clear error; the plugin under test loads again alongside them.

use accel_api::ErrorKind;
use accel_host::loader;

use crate::{ensure, Case, CaseResult, Context, Failure};

/// The file name of the wrong-ABI fixture plugin.
pub const WRONG_ABI_FIXTURE: &str = "libaccel_fixture_wrong_abi.so";
/// The file name of the fixture plugin with the current ABI version and a foreign layout.
pub const WRONG_LAYOUT_FIXTURE: &str = "libaccel_fixture_wrong_layout.so";

pub fn cases() -> Vec<Case> {
    crate::case_list![loader: missing_file, not_a_plugin, wrong_abi_version, wrong_layout, loads_again_alongside_others]
}

fn expect_load_error(path: &std::path::Path, kind: ErrorKind, words: &str) -> CaseResult {
    match loader::load(path) {
        Ok(_) => Err(Failure::Fail(format!("{} loaded as a plugin", path.display()))),
        Err(e) => {
            ensure!(e.kind == kind, "expected a {kind} error, got {e:?}");
            let text = e.to_string();
            ensure!(text.contains(&*path.to_string_lossy()), "the error does not name the file: {text}");
            ensure!(text.contains(words), "the error does not say '{words}': {text}");
            ensure!(!text.contains('\n'), "the error is not one line: {text:?}");
            Ok(())
        }
    }
}

fn missing_file(_: &Context) -> CaseResult {
    let path = std::env::temp_dir().join(format!("accel-missing-{}/libaccel_nothing.so", std::process::id()));
    expect_load_error(&path, ErrorKind::NOT_FOUND, "no such plugin file")
}

fn not_a_plugin(_: &Context) -> CaseResult {
    let path = std::env::temp_dir().join(format!("accel-not-a-plugin-{}.so", std::process::id()));
    std::fs::write(&path, b"this is not a shared library\n")
        .map_err(|e| Failure::NotRun(format!("writing {}: {e}", path.display())))?;
    let result = expect_load_error(&path, ErrorKind::PLUGIN_LOAD, "not a loadable shared library");
    let _ = std::fs::remove_file(&path);
    result
}

fn fixture(ctx: &Context, file: &str) -> Result<std::path::PathBuf, Failure> {
    let dir = ctx
        .fixtures
        .as_ref()
        .ok_or_else(|| Failure::NotRun("no fixture directory given (--fixtures)".into()))?;
    let path = dir.join(file);
    if !path.is_file() {
        return Err(Failure::NotRun(format!("fixture {} is missing", path.display())));
    }
    Ok(path)
}

fn wrong_abi_version(ctx: &Context) -> CaseResult {
    let path = fixture(ctx, WRONG_ABI_FIXTURE)?;
    expect_load_error(&path, ErrorKind::PLUGIN_LOAD, "built for accel ABI 0.0.1")
}

fn wrong_layout(ctx: &Context) -> CaseResult {
    let path = fixture(ctx, WRONG_LAYOUT_FIXTURE)?;
    expect_load_error(&path, ErrorKind::PLUGIN_LOAD, "layout is incompatible")
}

fn loads_again_alongside_others(ctx: &Context) -> CaseResult {
    let again = loader::load(&ctx.plugin_path)?;
    ensure!(
        again.name() == ctx.plugin.name(),
        "reloading gives backend '{}', first load '{}'",
        again.name(),
        ctx.plugin.name()
    );
    let path = fixture(ctx, WRONG_ABI_FIXTURE)?;
    ensure!(loader::load(&path).is_err(), "the wrong-ABI fixture loaded");
    // Both handles still work after a failed load in the same process.
    ensure!(again.probe() == ctx.plugin.probe(), "the two loads of one plugin probe differently");
    Ok(())
}
