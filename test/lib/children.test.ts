import { describe, expect, it } from "vitest";
import { join } from "node:path";
import { liveChildren, stopChildren, track } from "../../lib/children.ts";

const running = async (pid: number) => {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) Z/.test(stat); // a zombie has exited
  } catch {
    return false;
  }
};

describe("child processes", () => {
  it("stops tracked children with SIGTERM and forgets them once they exit", async () => {
    const child = track(new Deno.Command("sleep", { args: ["30"] }).spawn());
    expect(liveChildren()).toBe(1);
    await stopChildren();
    expect((await child.status).signal).toBe("SIGTERM");
    expect(liveChildren()).toBe(0);
  });

  it("kills a child that ignores SIGTERM once the grace period is over", async () => {
    const child = track(
      new Deno.Command("bash", {
        args: ["-c", 'trap "" TERM; echo ready; while true; do sleep 0.05; done'],
        stdout: "piped",
      }).spawn(),
    );
    const reader = child.stdout.getReader();
    await reader.read(); // the trap is installed
    reader.releaseLock();
    await stopChildren(300);
    expect((await child.status).signal).toBe("SIGKILL");
    await child.stdout.cancel();
    expect(liveChildren()).toBe(0);
  });

  it("a command killed with SIGTERM stops its children and exits 143", async () => {
    const dir = await Deno.makeTempDir();
    try {
      const script = join(dir, "parent.ts");
      const lib = new URL("../../lib/children.ts", import.meta.url).href;
      await Deno.writeTextFile(
        script,
        `import { stopChildrenOnSignal, track } from "${lib}";
stopChildrenOnSignal();
const c = track(new Deno.Command("sleep", { args: ["60"] }).spawn());
console.log(c.pid);
setInterval(() => {}, 1000);
`,
      );
      const parent = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--no-config", script],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const reader = parent.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const { value } = await reader.read();
      const pid = Number(value!.trim());
      expect(await running(pid)).toBe(true);
      parent.kill("SIGTERM");
      const status = await parent.status;
      expect(status.code).toBe(143);
      reader.releaseLock();
      await parent.stdout.cancel().catch(() => {});
      const stderr = new TextDecoder().decode(
        (await new Response(parent.stderr).arrayBuffer()) as ArrayBuffer,
      );
      expect(stderr).toContain("SIGTERM: stopping 1 child process(es)");
      for (let i = 0; i < 50 && await running(pid); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(await running(pid)).toBe(false);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});
