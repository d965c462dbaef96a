// Imported first by the gateway's bin, so it runs before any other module allocates.
import { fixYoungGeneration } from '../server/memory.js';

fixYoungGeneration();
