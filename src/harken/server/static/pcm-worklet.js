// The microphone's float samples -> 16-bit little-endian PCM at the model's rate, posted in frames.
//
// The page asks for an AudioContext at the model's rate, so the browser resamples and this only converts.
// Where a browser cannot run the microphone at that rate, the context runs at its own and this resamples:
// each output sample averages the input samples it covers (a box filter against aliasing) when reducing
// the rate, and interpolates linearly when raising it.

class PcmWorklet extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { outRate, frameMs } = options.processorOptions;
    this.step = sampleRate / outRate; // input samples per output sample
    this.frame = new Int16Array(Math.max(1, Math.round((outRate * frameMs) / 1000)));
    this.filled = 0;
    this.position = 0; // where the next output sample starts, in input samples from `carry`'s start
    this.carry = new Float32Array(0); // input not used up yet
    this.port.onmessage = (event) => {
      if (event.data === "flush") {
        this.post(this.filled);
        this.port.postMessage("flushed");
      }
    };
  }

  post(count) {
    if (count > 0) {
      const out = this.frame.slice(0, count);
      this.port.postMessage(out.buffer, [out.buffer]);
    }
    this.filled = 0;
  }

  push(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.frame[this.filled++] = clipped < 0 ? Math.round(clipped * 32768) : Math.round(clipped * 32767);
    if (this.filled === this.frame.length) this.post(this.filled);
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const length = channels[0].length;
    const mono = new Float32Array(this.carry.length + length);
    mono.set(this.carry);
    for (const channel of channels) {
      for (let i = 0; i < length; i++) mono[this.carry.length + i] += channel[i] / channels.length;
    }
    if (this.step === 1) {
      for (let i = 0; i < mono.length; i++) this.push(mono[i]);
      this.carry = new Float32Array(0);
      return true;
    }
    let position = this.position;
    while (position + Math.max(1, this.step) <= mono.length) {
      if (this.step > 1) {
        const first = Math.floor(position);
        const last = Math.floor(position + this.step);
        let sum = 0;
        for (let i = first; i < last; i++) sum += mono[i];
        this.push(sum / Math.max(1, last - first));
      } else {
        const i = Math.floor(position);
        const fraction = position - i;
        this.push(mono[i] * (1 - fraction) + mono[Math.min(i + 1, mono.length - 1)] * fraction);
      }
      position += this.step;
    }
    const used = Math.floor(position);
    this.carry = mono.slice(used);
    this.position = position - used;
    return true;
  }
}

registerProcessor("pcm-worklet", PcmWorklet);
