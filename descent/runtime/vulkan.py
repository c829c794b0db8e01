"""The few raw Vulkan values descent passes to kp: memory barrier flags and texel-buffer formats."""

ACCESS_SHADER_READ = 0x20
ACCESS_SHADER_WRITE = 0x40
ACCESS_TRANSFER_READ = 0x800
ACCESS_TRANSFER_WRITE = 0x1000
STAGE_COMPUTE_SHADER = 0x800
STAGE_TRANSFER = 0x1000

TEXEL_FORMATS = {"float": 100, "int": 99, "uint": 98}  # VK_FORMAT_R32_{SFLOAT,SINT,UINT} by GLSL storage type
