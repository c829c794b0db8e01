"""Count Vulkan devices through the loader before kp opens one (kp aborts the process when none exist)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from descent.errors import DeviceError, at_user_line

_NO_DEVICE_HELP = (
    "install a Vulkan driver: on Debian `sudo apt-get install mesa-vulkan-drivers` gives lavapipe (the CPU); "
    "for a GPU install its vendor's Vulkan driver, or point VK_DRIVER_FILES at its ICD json"
)


def _driver_files() -> str:
    """Where VK_DRIVER_FILES (or its older name) points at files that do not exist, say so: the loader then
    finds no driver without saying why."""
    for variable in ("VK_DRIVER_FILES", "VK_ICD_FILENAMES"):
        missing = [f for f in os.environ.get(variable, "").split(os.pathsep) if f and not os.path.exists(f)]
        if missing:
            return f"; {variable} names {', '.join(missing)}, which does not exist"
    return ""


class _ApplicationInfo(ctypes.Structure):
    _fields_ = [
        ("sType", ctypes.c_int32),
        ("pNext", ctypes.c_void_p),
        ("pApplicationName", ctypes.c_char_p),
        ("applicationVersion", ctypes.c_uint32),
        ("pEngineName", ctypes.c_char_p),
        ("engineVersion", ctypes.c_uint32),
        ("apiVersion", ctypes.c_uint32),
    ]


class _InstanceCreateInfo(ctypes.Structure):
    _fields_ = [
        ("sType", ctypes.c_int32),
        ("pNext", ctypes.c_void_p),
        ("flags", ctypes.c_uint32),
        ("pApplicationInfo", ctypes.POINTER(_ApplicationInfo)),
        ("enabledLayerCount", ctypes.c_uint32),
        ("ppEnabledLayerNames", ctypes.c_void_p),
        ("enabledExtensionCount", ctypes.c_uint32),
        ("ppEnabledExtensionNames", ctypes.c_void_p),
    ]


def count_devices() -> int:
    """Physical devices the Vulkan loader finds; raises DeviceError when there is no loader or no device."""
    name = ctypes.util.find_library("vulkan") or "libvulkan.so.1"
    try:
        vulkan = ctypes.CDLL(name)
    except OSError:
        raise DeviceError(at_user_line(
            "the Vulkan loader (libvulkan.so.1) is not installed: `sudo apt-get install libvulkan1`, then "
            + _NO_DEVICE_HELP)) from None
    application = _ApplicationInfo(0, None, b"descent", 1, b"descent", 1, (1 << 22) | (1 << 12))
    create_info = _InstanceCreateInfo(1, None, 0, ctypes.pointer(application), 0, None, 0, None)
    instance = ctypes.c_void_p()
    result = vulkan.vkCreateInstance(ctypes.byref(create_info), None, ctypes.byref(instance))
    if result != 0:
        raise DeviceError(at_user_line(
            f"no Vulkan driver could be loaded (vkCreateInstance returned {result}){_driver_files()}; "
            + _NO_DEVICE_HELP))
    try:
        count = ctypes.c_uint32(0)
        vulkan.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), None)
    finally:
        vulkan.vkDestroyInstance(instance, None)
    if count.value == 0:
        raise DeviceError(at_user_line("Vulkan found no device; " + _NO_DEVICE_HELP))
    return count.value
