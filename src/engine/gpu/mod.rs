//! The wgpu backend (issue 3): adapter choice, pipeline cache, buffers, one submission per step.
