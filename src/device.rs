//! Finding a GPU: probing for a wgpu adapter without panicking when there is none.

use std::sync::OnceLock;

use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, graphics::AutoGraphicsApi, init_setup};

/// Initialises burn-wgpu on the default adapter (a discrete GPU if present, else an
/// integrated one, else a software adapter such as Mesa lavapipe) and returns its device
/// with the adapter's description. The probe runs once per process; later calls return
/// the same answer.
///
/// # Errors
/// A message when no adapter exists (no Vulkan/Metal/DX12 driver, or none usable).
pub fn probe_wgpu() -> Result<(WgpuDevice, String), String> {
    static PROBE: OnceLock<Result<(WgpuDevice, String), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            // cubecl panics when there is no adapter; its message is printed once.
            let setup = std::panic::catch_unwind(|| {
                init_setup::<AutoGraphicsApi>(&WgpuDevice::default(), RuntimeOptions::default())
            });
            match setup {
                Ok(setup) => {
                    let info = setup.adapter.get_info();
                    Ok((
                        WgpuDevice::default(),
                        format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend),
                    ))
                }
                Err(payload) => {
                    let reason = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "unknown reason".into());
                    Err(format!("no usable wgpu adapter: {reason}"))
                }
            }
        })
        .clone()
}

/// [`probe_wgpu`] for a test named `test`: the device, or `None` (with a line on stderr)
/// when there is no adapter and `CI` is unset.
///
/// # Panics
/// When `CI` is set and there is no adapter: CI installs lavapipe (`.ci/run`), so a
/// missing adapter there is a failure, never a silent skip.
pub fn wgpu_for_test(test: &str) -> Option<WgpuDevice> {
    match probe_wgpu() {
        Ok((device, adapter)) => {
            eprintln!("{test}: wgpu adapter {adapter}");
            Some(device)
        }
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("{test}: CI is set but {reason}: install mesa-vulkan-drivers (see .ci/run)")
        }
        Err(reason) => {
            eprintln!("skipping {test} (CI is not set): {reason}");
            None
        }
    }
}
