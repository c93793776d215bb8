/*
 * localStorage when the browser allows it, memory when it does not: third-party
 * storage may be refused or partitioned, and the widget must work either way
 * (the visitor then logs in again after a reload).
 */

export class Store {
  constructor(prefix) {
    this.prefix = prefix;
    this.memory = new Map();
    this.backend = null;
    try {
      const probe = `${prefix}probe`;
      window.localStorage.setItem(probe, "1");
      window.localStorage.removeItem(probe);
      this.backend = window.localStorage;
    } catch {
      this.backend = null;
    }
  }

  get persistent() {
    return this.backend !== null;
  }

  get(key) {
    if (this.backend) {
      try {
        return this.backend.getItem(this.prefix + key);
      } catch {
        this.backend = null;
      }
    }
    return this.memory.has(key) ? this.memory.get(key) : null;
  }

  set(key, value) {
    this.memory.set(key, value);
    if (this.backend) {
      try {
        this.backend.setItem(this.prefix + key, value);
      } catch {
        this.backend = null;
      }
    }
  }

  remove(key) {
    this.memory.delete(key);
    if (this.backend) {
      try {
        this.backend.removeItem(this.prefix + key);
      } catch {
        this.backend = null;
      }
    }
  }

  getJSON(key, fallback) {
    try {
      const raw = this.get(key);
      return raw === null ? fallback : JSON.parse(raw);
    } catch {
      return fallback;
    }
  }

  setJSON(key, value) {
    this.set(key, JSON.stringify(value));
  }
}
