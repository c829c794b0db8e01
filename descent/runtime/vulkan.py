"""The few raw Vulkan values descent passes to kp: memory barrier flags and texel-buffer formats (the
device's own enumerations, as kp reports them, are read in device.py)."""

ACCESS_SHADER_READ = 0x20
ACCESS_SHADER_WRITE = 0x40
ACCESS_TRANSFER_READ = 0x800
ACCESS_TRANSFER_WRITE = 0x1000
STAGE_COMPUTE_SHADER = 0x800
STAGE_TRANSFER = 0x1000

TEXEL_FORMATS = {("float", 1): 100, ("int", 1): 99, ("uint", 1): 98,  # VK_FORMAT_R32_{SFLOAT,SINT,UINT}
                 ("float", 4): 109}  # VK_FORMAT_R32G32B32A32_SFLOAT, by GLSL storage type and components
