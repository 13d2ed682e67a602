// TODO(helper): safetensors read/write
export {};
