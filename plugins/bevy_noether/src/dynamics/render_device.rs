//! Sharing Bevy's render device with burn: one wgpu 29 stack, so the dynamics and the
//! renderer use the same adapter, device and queue.

use bevy::{
    app::App,
    render::{
        RenderApp,
        renderer::{RenderAdapter, RenderAdapterInfo, RenderDevice, RenderInstance, RenderQueue},
    },
};
use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, WgpuSetup, init_device};

/// burn-wgpu initialised on the render app's device: (device, description, whether it is a
/// hardware adapter). `None` without a render app.
pub(super) fn share(app: &App) -> Option<(WgpuDevice, String, bool)> {
    let world = app.get_sub_app(RenderApp)?.world();
    let instance = world.get_resource::<RenderInstance>()?;
    let adapter = world.get_resource::<RenderAdapter>()?;
    let device = world.get_resource::<RenderDevice>()?;
    let queue = world.get_resource::<RenderQueue>()?;
    let info = (*world.get_resource::<RenderAdapterInfo>()?.0).clone();
    let setup = WgpuSetup {
        instance: (**instance.0).clone(),
        adapter: (**adapter.0).clone(),
        device: device.wgpu_device().clone(),
        queue: (**queue.0).clone(),
        backend: info.backend,
    };
    let hardware = info.device_type != wgpu::DeviceType::Cpu;
    let device = init_device(setup, RuntimeOptions::default());
    Some((
        device,
        format!(
            "{} ({:?}, {:?}), shared with the renderer",
            info.name, info.device_type, info.backend
        ),
        hardware,
    ))
}
