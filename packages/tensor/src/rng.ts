// TODO(helper): seeded RNG
export {};
